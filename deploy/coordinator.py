"""The coordinator's processes: a TLS SuperLink with SuperNode authentication, and runs.

Thin wrappers that build Flower's own command lines (``flower-superlink``, ``flwr``),
with runtime dependency installation always off and Flower's home kept in the
coordinator's state folder. The ServerApp of a run writes the same output folder as a
simulation, on the coordinator's disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from common.config import (
    APP_ROOT,
    CONFIG_FILE_KEY,
    DEPLOYED_KEY,
    OUTPUT_DIR_KEY,
    RESUME_KEY,
    SET_KEY,
    VERBOSE_KEY,
    RunConfig,
)
from common.errors import PrivatuneError
from deploy.keys import shared_secret

CONNECTION = "privatune"  # the name of the SuperLink connection in Flower's config


@dataclass(frozen=True)
class Coordinator:
    """Where the coordinator keeps its keys and state."""

    keys: Path
    state: Path

    @property
    def flwr_home(self) -> Path:
        """Flower's home for the SuperLink process (apps, its own files)."""
        return self.state / "superlink-home"

    @property
    def cli_home(self) -> Path:
        """Flower's home for the coordinator's `flwr` commands (the connection config)."""
        return self.state / "cli-home"

    def require_keys(self) -> None:
        missing = [
            n for n in ("ca.crt", "server.pem", "server.key") if not (self.keys / n).is_file()
        ]
        if missing:
            raise PrivatuneError(
                f"--keys {self.keys}: missing {', '.join(missing)}; create them with "
                f"`privatune keys server --out {self.keys} --host <this machine's name>`"
            )


def flower_env(home: Path) -> dict[str, str]:
    """Environment for every Flower process we start: our venv first, no runtime installs."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home.resolve())
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    # The SuperExec looks for work to launch once a second by default; every message of a
    # round waits for that poll, so a 0.1 s poll takes ~0.45 s off each message on average.
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def superexec_secret(c: Coordinator) -> Path:
    """The shared secret that lets only our own SuperExec take ServerApp tasks.

    flwr 1.41 serves the Runtime API (where ServerApp processes fetch their tasks) on the
    same public port as the Fleet API; with process isolation and this secret, a party
    that can reach the port still cannot act as the ServerApp.
    """
    return shared_secret(c.state / "superexec.secret")


def superexec_command(c: Coordinator, *, runtime_address: str) -> list[str]:
    """The long-running SuperExec that starts ServerApp processes for the SuperLink."""
    return [
        sys.executable, "-m", "deploy.superexec",  # flower-superexec, preforked tasks
        "--runtime-api-address", runtime_address,
        "--root-certificates", str(c.keys / "ca.crt"),
        "--superexec-auth-secret-file", str(superexec_secret(c)),
    ]  # fmt: skip


def superlink_command(c: Coordinator, *, address: str, port: int) -> list[str]:
    """flwr 1.41 serves the Fleet, Control and Runtime APIs on one HTTPS port."""
    c.require_keys()
    return [
        "flower-superlink",
        "--ssl-ca-certfile", str(c.keys / "ca.crt"),
        "--ssl-certfile", str(c.keys / "server.pem"),
        "--ssl-keyfile", str(c.keys / "server.key"),
        "--enable-supernode-auth",
        "--isolation", "process",
        "--superexec-auth-secret-file", str(superexec_secret(c)),
        "--host", address,
        "--port", str(port),
        "--database", str(c.state / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]  # fmt: skip


def write_connection(c: Coordinator, *, control_address: str) -> Path:
    """Flower's CLI config: one TLS connection to this coordinator's Control API."""
    c.cli_home.mkdir(parents=True, exist_ok=True)
    path = c.cli_home / "config.toml"
    config = {
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {
                "address": control_address,
                "root-certificates": str((c.keys / "ca.crt").resolve()),
            },
        }
    }
    path.write_text(tomli_w.dumps(config))
    return path


def register_command(public_key: Path) -> list[str]:
    if not public_key.is_file():
        raise PrivatuneError(f"{public_key}: no such public key file (an organisation's ORG.pub)")
    return ["flwr", "supernode", "register", str(public_key), CONNECTION]


def write_run_config(
    config: RunConfig, output: Path, folder: Path, *, resume: bool = False, verbose: bool = False
) -> Path:
    """The run's Flower run_config as a TOML file: the whole config travels to every node.

    ``resume`` makes the ServerApp continue the run in ``output`` from its checkpoint;
    ``verbose`` makes it stream Flower's own INFO lines besides the run's progress.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run_config.toml"
    values: dict[str, str | bool] = {
        CONFIG_FILE_KEY: "",
        SET_KEY: config.to_set_string(),
        OUTPUT_DIR_KEY: str(output.resolve()),
        DEPLOYED_KEY: True,
    }
    if resume:
        values[RESUME_KEY] = True
    if verbose:
        values[VERBOSE_KEY] = True
    path.write_text(tomli_w.dumps(values))
    return path


def run_command(run_config_file: Path) -> list[str]:
    return [
        "flwr",
        "run",
        str(APP_ROOT),
        CONNECTION,
        "--stream",
        "--run-config",
        str(run_config_file),
    ]


def execute(command: list[str], home: Path, *, check: bool = True, verbose: bool = False) -> int:
    """Run a Flower command in the foreground with our environment; Flower's own INFO
    lines only with ``verbose`` (its prints, and the streamed run log, always show)."""
    env = flower_env(home)
    if not verbose:
        env.setdefault("FLWR_LOG_LEVEL", "WARNING")
    completed = subprocess.run(command, env=env, check=False)
    if check and completed.returncode != 0:
        raise PrivatuneError(
            f"`{' '.join(command[:3])} ...` failed with exit {completed.returncode}"
        )
    return completed.returncode

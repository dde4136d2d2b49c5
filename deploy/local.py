"""A whole deployment on this machine (loopback): for tests, benchmarks and trying it out.

Starts the same commands an operator runs — ``privatune coordinator start``, ``node
start`` — as separate processes, each in its own session so that :meth:`stop` can end
it and everything it started by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PRIVATUNE = str(Path(sys.executable).parent / "privatune")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def write_run_toml(
    path: Path,
    *,
    clients: int,
    rounds: int,
    steps: int,
    model_path: str = "default",
    lr: float = 0.01,
    batch_size: int = 16,
) -> Path:
    """A deployment run config: demo labels, DP at ε = 8 and SecAgg+ with fixed weights."""
    from common.data.demo import DEMO_LABELS

    labels = ", ".join(f'"{label}"' for label in DEMO_LABELS)
    path.write_text(
        f"""[model]
path = "{model_path}"
max-length = 32
[data]
labels = [{labels}]
server-eval = ""
[federation]
num-clients = {clients}
clients-per-round = {clients}
min-clients = 2
rounds = {rounds}
wait-for-clients = 120
[training]
optimizer = "adam"
lr = {lr}
local-steps = {steps}
batch-size = {batch_size}
[privacy]
target-epsilon = 8.0
[secure-aggregation]
enabled = true
fixed-weight = true
"""
    )
    return path


@dataclass
class LocalDeployment:
    """A coordinator and organisations in one folder, all on 127.0.0.1."""

    root: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def state(self) -> Path:
        return self.root / "coordinator"

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([PRIVATUNE, *args], capture_output=True, text=True, timeout=timeout)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [PRIVATUNE, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(proc)
        return proc

    def add_org(self, org: str, rows: list[dict], **policy: object) -> Path:
        """Keys, data and node.toml for one organisation; returns its folder."""
        folder = self.root / org
        folder.mkdir(parents=True, exist_ok=True)
        done = self.cli("keys", "node", "--out", str(folder), "--name", org)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        with open(folder / "data.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        lines = [
            f'name = "{org}"',
            f'data-path = "{folder / "data.jsonl"}"',
            f'state-dir = "{folder / "state"}"',
            *(f"{k} = {json.dumps(v)}" for k, v in policy.items()),
        ]
        (folder / "node.toml").write_text("\n".join(lines) + "\n")
        return folder

    def start_coordinator(self) -> None:
        done = self.cli("keys", "server", "--out", str(self.keys), "--host", "localhost")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        self.spawn(
            "superlink",
            "coordinator", "start",
            "--keys", str(self.keys), "--state", str(self.state),
            "--address", "127.0.0.1", "--port", str(self.port),
        )  # fmt: skip
        wait_port(self.port)
        time.sleep(2)

    def register(self, *orgs: str) -> None:
        pubs = [str(self.root / org / f"{org}.pub") for org in orgs]
        done = self.cli(
            "coordinator", "register", "--keys", str(self.keys), "--state", str(self.state), *pubs
        )
        if done.returncode != 0:
            raise RuntimeError(done.stdout + done.stderr)

    def start_node(self, org: str, *, ca: Path | None = None) -> subprocess.Popen:
        return self.spawn(
            f"node-{org}",
            "node", "start",
            "--superlink", f"127.0.0.1:{self.port}",
            "--ca", str(ca or self.keys / "ca.crt"),
            "--key", str(self.root / org / f"{org}.key"),
            "--node-config", str(self.root / org / "node.toml"),
            "--port", str(free_port()),
        )  # fmt: skip

    def start_federation(
        self,
        rows: dict[str, list[dict]],
        *,
        online: tuple[str, ...] | None = None,
        **policy: object,
    ) -> None:
        """Every organisation in ``rows`` gets keys, data and a node.toml with ``policy``;
        then the coordinator starts and the ``online`` ones (default: all) are registered
        and started, with a few seconds for their nodes to connect."""
        for org, org_rows in rows.items():
            self.add_org(org, org_rows, **policy)
        self.start_coordinator()
        online = tuple(rows) if online is None else online
        self.register(*online)
        for org in online:
            self.start_node(org)
        time.sleep(5)

    def run(self, config: Path, output: Path, *overrides: str) -> subprocess.CompletedProcess:
        sets = [item for o in overrides for item in ("--set", o)]
        return self.cli(
            "coordinator", "run",
            "--keys", str(self.keys), "--state", str(self.state),
            "--config", str(config), "--output", str(output), *sets,
        )  # fmt: skip

    def stop(self) -> None:
        """End every process this deployment started, by PID (process group)."""
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

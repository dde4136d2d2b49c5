"""A real deployment on loopback: TLS SuperLink with node authentication, three SuperNodes.

Every process the test starts is started in its own session and stopped by PID at the
end. The run uses DP-SGD and SecAgg+ together; negative tests check that an unregistered
node key and a node without the coordinator's CA are refused, and that a node whose
local policy forbids the run's privacy settings refuses to train.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.data.demo import DEMO_LABELS, make_demo_classification, write_jsonl

PRIVATUNE = str(Path(sys.executable).parent / "privatune")
ORGS = ("org1", "org2", "org3")
# What a node may ever send: SecAgg+ protocol values and our named metrics, no arrays.
ALLOWED_CONFIGS = {
    "secaggplus_configs",
    "fitres.metrics",
    "fitres.status",
    "evaluateres.metrics",
    "evaluateres.status",
}
ALLOWED_METRICS = {
    "client_id", "dp_delta", "empty_batches", "epsilon", "noise_multiplier", "num_too_long",
    "privacy_history", "refused", "refusal", "sample_rate", "secagg_clipped_values", "steps",
    "train_loss", "code", "message", "pk1", "pk2", "ctxts", "dsts", "masked_params", "nids",
    "shares",
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {port}")


@dataclass
class Deployment:
    root: Path
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def state(self) -> Path:
        return self.root / "coordinator"

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [PRIVATUNE, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([PRIVATUNE, *args], capture_output=True, text=True, timeout=timeout)

    def node(
        self, org: str, *, ca: Path | None = None, port: int | None = None
    ) -> subprocess.Popen:
        return self.spawn(
            f"node-{org}",
            "node", "start",
            "--superlink", f"127.0.0.1:{self.port}",
            "--ca", str(ca or self.keys / "ca.crt"),
            "--key", str(self.root / org / f"{org}.key"),
            "--node-config", str(self.root / org / "node.toml"),
            "--port", str(port or _free_port()),
        )  # fmt: skip

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _org_files(root: Path, org: str, rows: list[dict], **policy: object) -> None:
    folder = root / org
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(rows, folder / "data.jsonl")
    lines = [
        f'name = "{org}"',
        f'data-path = "{folder / "data.jsonl"}"',
        f'state-dir = "{folder / "state"}"',
        *(f"{k} = {json.dumps(v)}" for k, v in policy.items()),
    ]
    (folder / "node.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    dep = Deployment(root=root, port=_free_port())
    try:
        assert (
            dep.cli("keys", "server", "--out", str(dep.keys), "--host", "localhost").returncode == 0
        )
        rows = [
            {"text": r["text"], "label": r["label"]} for r in make_demo_classification(240, seed=5)
        ]
        for i, org in enumerate((*ORGS, "stranger")):
            assert dep.cli("keys", "node", "--out", str(root / org), "--name", org).returncode == 0
            _org_files(root, org, rows[i * 60 : (i + 1) * 60], **{"max-epsilon": 10.0})
        dep.spawn(
            "superlink",
            "coordinator", "start",
            "--keys", str(dep.keys), "--state", str(dep.state),
            "--address", "127.0.0.1", "--port", str(dep.port),
        )  # fmt: skip
        _wait_port(dep.port)
        time.sleep(2)
        pubs = [str(root / org / f"{org}.pub") for org in ORGS]
        done = dep.cli(
            "coordinator", "register", "--keys", str(dep.keys), "--state", str(dep.state), *pubs
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for org in ORGS:
            dep.node(org)
        time.sleep(5)
        yield dep
    finally:
        dep.stop()
    assert all(p.poll() is not None for p in dep.processes)


def _run_config(root: Path, tiny_bert: Path, *extra: str) -> Path:
    path = root / "run.toml"
    labels = ", ".join(f'"{label}"' for label in DEMO_LABELS)
    path.write_text(
        f"""
[model]
path = "{tiny_bert}"
max-length = 32
[data]
labels = [{labels}]
server-eval = ""
[federation]
num-clients = 3
clients-per-round = 3
min-clients = 2
rounds = 2
wait-for-clients = 120
[training]
optimizer = "adam"
lr = 0.01
local-steps = 2
batch-size = 16
[privacy]
target-epsilon = 8.0
[secure-aggregation]
enabled = true
fixed-weight = true
"""
    )
    return path


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_deployed_run_with_dp_and_secagg(deployment: Deployment, tiny_bert: Path) -> None:
    """Two rounds over TLS with three authenticated nodes: outputs, ledgers, audit logs."""
    out = deployment.root / "out"
    done = deployment.cli(
        "coordinator", "run",
        "--keys", str(deployment.keys), "--state", str(deployment.state),
        "--config", str(_run_config(deployment.root, tiny_bert)),
        "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = _metrics(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["secagg"] is True and r["num_clients"] == 3 and r["failed"] is False
        assert r["uplink_bytes"] > 0
    for name in ("summary.json", "privacy_ledger.json", "report.html", "config.resolved.toml"):
        assert (out / name).is_file(), name
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    server_ledger = json.loads((out / "privacy_ledger.json").read_text())["clients"]
    assert set(server_ledger) == set(ORGS)
    for org in ORGS:
        state = deployment.root / org / "state"
        ledger = json.loads((state / "privacy_ledger.json").read_text())
        assert 0 < ledger["epsilon"] <= 8.0
        assert ledger["history"] == server_ledger[org]["history"]
        lines = [json.loads(x) for x in (state / "audit.jsonl").read_text().splitlines()]
        # SecAgg+ sends four train messages a round; nothing else left the node.
        assert [line["stage"] for line in lines] == [
            "setup", "share_keys", "collect_masked_vectors", "unmask"
        ] * 2  # fmt: skip
        for line in lines:
            assert line["arrays"] == []  # no plain arrays: the delta leaves only masked
            assert set(line["configs"]) <= ALLOWED_CONFIGS
            names = {
                n for keys in [*line["configs"].values(), *line["metrics"].values()] for n in keys
            }
            assert names <= ALLOWED_METRICS | {"num_examples"}, names
            assert len(line["sha256"]) == 64 and line["bytes"] > 0


def test_node_policy_refuses_a_run_without_dp(deployment: Deployment, tiny_bert: Path) -> None:
    """Nodes requiring DP refuse a run with privacy off; the run ends early, loudly recorded."""
    out = deployment.root / "out-nodp"
    config = _run_config(deployment.root, tiny_bert)
    done = deployment.cli(
        "coordinator", "run",
        "--keys", str(deployment.keys), "--state", str(deployment.state),
        "--config", str(config), "--output", str(out),
        "--set", "privacy.enabled=false", "--set", "secure-aggregation.enabled=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = _metrics(out)
    assert rows[1]["num_refused"] == 3 and "privacy budgets exhausted" in rows[1]["stopped"]
    assert len(rows) == 2


def test_unregistered_node_is_refused(deployment: Deployment) -> None:
    """A node whose key the coordinator never registered cannot join."""
    proc = deployment.node("stranger")
    assert proc.wait(timeout=90) != 0
    log = (deployment.root / "node-stranger.log").read_text()
    assert "Failed to activate SuperNode" in log or "could not establish" in log


def test_node_without_the_ca_cannot_connect(deployment: Deployment, tmp_path: Path) -> None:
    """A node trusting another CA fails the TLS handshake with the SuperLink."""
    other = tmp_path / "other"
    assert (
        deployment.cli("keys", "server", "--out", str(other), "--host", "localhost").returncode == 0
    )
    proc = deployment.node("org1", ca=other / "ca.crt")
    assert proc.wait(timeout=90) != 0

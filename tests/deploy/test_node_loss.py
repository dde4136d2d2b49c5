"""A node killed with SIGKILL in the middle of a secure round, on a loopback deployment.

What an operator must be able to rely on: nothing of the killed node keeps running; the
run fails with one line and exit 1, still writing its summary and report; after the node
restarts, ``coordinator run --resume`` finishes the run, and every node's ledger holds
each round exactly once (the round in flight when the node died is served from the reply
each node kept, not trained and charged again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.data.demo import make_demo_classification
from deploy.local import PRIVATUNE, LocalDeployment, write_run_toml
from deploy.supervise import _cmdline

pytestmark = pytest.mark.slow  # two deployed runs and a node restart: about two minutes
ORGS = ("org1", "org2")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    dep = LocalDeployment(root=tmp_path_factory.mktemp("node-loss"))
    try:
        rows = [
            {"text": r["text"], "label": r["label"]} for r in make_demo_classification(120, seed=5)
        ]
        shares = {org: rows[i * 60 : (i + 1) * 60] for i, org in enumerate(ORGS)}
        dep.start_federation(shares, **{"max-epsilon": 10.0})
        yield dep
    finally:
        dep.stop()


def _processes_of(folder: Path) -> list[int]:
    """PIDs whose command line names ``folder`` (a node's state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            if cmd and any(str(folder) in part for part in cmd):
                found.append(int(entry.name))
    return found


def _ledger(dep: LocalDeployment, org: str) -> dict:
    return json.loads((dep.root / org / "state" / "privacy_ledger.json").read_text())


def test_a_node_killed_mid_round_then_resume(deployment: LocalDeployment, tiny_bert: Path) -> None:
    dep = deployment
    config = write_run_toml(
        dep.root / "run.toml", clients=2, rounds=3, steps=6, model_path=str(tiny_bert)
    )
    out = dep.root / "run"
    command = [
        PRIVATUNE, "coordinator", "run", "--keys", str(dep.keys), "--state", str(dep.state),
        "--config", str(config), "--output", str(out), "--set", "federation.round-timeout=30",
    ]  # fmt: skip
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    audit = dep.root / "org1" / "state" / "audit.jsonl"
    deadline = time.monotonic() + 300
    # Round 2's masked vectors are on their way: kill org2's `node start` now.
    while time.monotonic() < deadline:
        lines = audit.read_text().splitlines() if audit.exists() else []
        if sum('"collect_masked_vectors"' in line for line in lines) >= 2:
            break
        time.sleep(0.1)
    else:
        run.kill()
        pytest.fail("round 2 never reached its masked-vector stage")
    org2 = dep.root / "org2" / "state"
    node = next(p for p in dep.processes if "org2" in " ".join(map(str, p.args)))
    assert len(_processes_of(org2)) >= 3  # worker, SuperNode, SuperExec (+ forkserver)
    os.kill(node.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _processes_of(org2) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(org2) == [], "children of a kill -9'd node start kept running"

    text, _ = run.communicate(timeout=300)
    assert run.returncode == 1, text[-3000:]
    assert "run FAILED" in text and "round 2" in text and "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "failed" and summary["rounds_completed"] == 1
    assert (out / "report.html").is_file()

    dep.start_node("org2")
    time.sleep(8)
    done = dep.cli(
        "coordinator", "run", "--keys", str(dep.keys), "--state", str(dep.state),
        "--output", str(out), "--resume",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    ledgers = {org: _ledger(dep, org) for org in ORGS}
    for org, ledger in ledgers.items():
        assert ledger["rounds"] == [1, 2, 3], (org, ledger)  # round 2 charged once
        assert len(set(ledger["keys"])) == 3
        assert ledger["epsilon"] <= 8.0 + 1e-6  # the run's target, not more
    server = json.loads((out / "privacy_ledger.json").read_text())["clients"]
    assert {org: server[org]["history"] for org in ORGS} == {
        org: ledgers[org]["history"] for org in ORGS
    }

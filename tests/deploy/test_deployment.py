"""A real deployment on loopback: TLS SuperLink with node authentication, three SuperNodes.

Every process the test starts is started in its own session and stopped by PID at the
end. The run uses DP-SGD and SecAgg+ together; negative tests check that an unregistered
node key and a node without the coordinator's CA are refused, that a node whose local
policy forbids the run's privacy settings refuses to train (exit 3), and that nodes whose
lifetime budgets are spent stop the next run (exit 4). A node killed mid-run, then the
run resumed, is tests/deploy/test_node_loss.py (slow).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.data.demo import make_demo_classification
from deploy.local import LocalDeployment, write_run_toml

ORGS = ("org1", "org2", "org3")
# What a node may ever send: SecAgg+ protocol values and our named metrics, no arrays.
ALLOWED_CONFIGS = {
    "secaggplus_configs",
    "fitres.metrics",
    "fitres.status",
    "evaluateres.metrics",
    "evaluateres.status",
}
# Under DP no statistic of the private rows that DP does not cover (training loss, counts
# of too-long rows, empty batches or clipped values) may leave a node whose policy keeps
# them (the default).
ALLOWED_METRICS = {
    "client_id", "dp_delta", "epsilon", "noise_multiplier", "privacy_history", "refused",
    "refusal", "sample_rate", "steps", "code", "message", "pk1", "pk2", "ctxts", "dsts",
    "masked_params", "nids", "shares",
}  # fmt: skip


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    dep = LocalDeployment(root=tmp_path_factory.mktemp("deployment"))
    try:
        rows = [
            {"text": r["text"], "label": r["label"]} for r in make_demo_classification(240, seed=5)
        ]
        # "stranger" has keys and data but is never registered (the refusal test).
        shares = {org: rows[i * 60 : (i + 1) * 60] for i, org in enumerate((*ORGS, "stranger"))}
        dep.start_federation(shares, online=ORGS, **{"max-epsilon": 10.0})
        yield dep
    finally:
        dep.stop()
    assert all(p.poll() is not None for p in dep.processes)


def _run_config(root: Path, tiny_bert: Path) -> Path:
    return write_run_toml(
        root / "run.toml", clients=3, rounds=2, steps=2, model_path=str(tiny_bert)
    )


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_deployed_run_with_dp_and_secagg(deployment: LocalDeployment, tiny_bert: Path) -> None:
    """Two rounds over TLS with three authenticated nodes: outputs, ledgers, audit logs."""
    out = deployment.root / "out"
    done = deployment.run(_run_config(deployment.root, tiny_bert), out)
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
            # The delta leaves only masked (inside SecAgg+'s config record): the plain
            # parameter arrays of the legacy reply are emptied by Flower's mod.
            assert all(a["bytes"] == 0 for a in line["arrays"]), line["arrays"]
            assert set(line["configs"]) <= ALLOWED_CONFIGS
            names = {
                n for keys in [*line["configs"].values(), *line["metrics"].values()] for n in keys
            }
            assert names <= ALLOWED_METRICS | {"num_examples"}, names
            assert len(line["sha256"]) == 64 and line["bytes"] > 0


def test_node_policy_refuses_a_run_without_dp(deployment: LocalDeployment, tiny_bert: Path) -> None:
    """Nodes requiring DP refuse a run with privacy off; the run ends early, loudly recorded."""
    out = deployment.root / "out-nodp"
    config = _run_config(deployment.root, tiny_bert)
    done = deployment.run(config, out, "privacy.enabled=false")
    # Exit 3: the run did not do what was asked, every node refused (README "Exit codes").
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run stopped, every node refused" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    # Flower's SecAgg+ ERROR line is dropped: the round's line names each refusal.
    assert "Insufficient available nodes" not in done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "refused" and summary["rounds_completed"] == 0
    assert (out / "report.html").is_file()
    rows = _metrics(out)
    assert rows[1]["num_refused"] == 3 and "refused to train" in rows[1]["stopped"]
    assert "requires DP-SGD" in rows[1]["stopped"]
    assert len(rows) == 2


def test_spent_budgets_stop_the_run_with_exit_4(
    deployment: LocalDeployment, tiny_bert: Path
) -> None:
    """After the first run each node's lifetime ledger (max-epsilon 10) holds about 8: a
    second run at ε 8 fits at most a round before every node refuses on its own ledger,
    and the run says so."""
    out = deployment.root / "out-budget"
    done = deployment.run(_run_config(deployment.root, tiny_bert), out)
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run stopped, privacy budgets spent" in done.stdout
    assert "lifetime ε budget is reached" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "budget" and summary["exit_code"] == 4
    assert summary["rounds_completed"] < 2
    for org in ORGS:  # never past the node's own lifetime budget
        ledger = json.loads((deployment.root / org / "state" / "privacy_ledger.json").read_text())
        assert ledger["epsilon"] <= 10.0


def test_unregistered_node_is_refused(deployment: LocalDeployment) -> None:
    """A node whose key the coordinator never registered cannot join."""
    proc = deployment.start_node("stranger")
    assert proc.wait(timeout=90) != 0
    log = (deployment.root / "node-stranger.log").read_text()
    assert "Failed to activate SuperNode" in log or "could not establish" in log


def test_node_without_the_ca_cannot_connect(deployment: LocalDeployment, tmp_path: Path) -> None:
    """A node trusting another CA fails the TLS handshake with the SuperLink."""
    other = tmp_path / "other"
    assert (
        deployment.cli("keys", "server", "--out", str(other), "--host", "localhost").returncode == 0
    )
    proc = deployment.start_node("org1", ca=other / "ca.crt")
    assert proc.wait(timeout=90) != 0

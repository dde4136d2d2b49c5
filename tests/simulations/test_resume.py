"""A simulation killed mid-round resumes from its last completed round, losing, repeating
and paying for nothing twice.

The run is a real simulation process (tiny model, DP-SGD with secret noise, FedAvgM with
momentum, so the server optimiser's state matters), killed with SIGKILL, its whole
process group with Ray, in round 3 *after* client 0 has trained and kept its reply but
before the server heard it; then resumed with `privatune simulate --resume`. The resumed
server asks round 3 again from its round-2 checkpoint: every client must answer with the
reply it kept, so its ledger holds round 3 once. (Had the checkpointed adapter come back
different by one bit, the question would differ, the client would train again and its
ledger would hold round 3 twice.) An uninterrupted run of the same config is the oracle
for what is deterministic: rounds, ledgers, ε. Its adapter is not: the DP noise is
secret, so two runs never end on the same adapter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # three processes, each importing torch and starting Ray


def _args(tiny_bert: Path) -> list[str]:
    sets = [
        f"model.path='{tiny_bert}'",
        "data.demo-examples=150",
        "data.server-eval-examples=50",
        "partition.method='iid'",
        "federation.num-clients=3",
        "federation.clients-per-round=3",
        "federation.min-clients=2",
        "federation.rounds=4",
        "privacy.noise-multiplier=1.0",
        "training.local-steps=2",
        "training.batch-size=16",
        "server-optimizer.name='fedavgm'",
        "server-optimizer.momentum=0.9",
    ]
    args = ["--config", str(ROOT / "examples" / "demo.toml"), "--no-report"]
    for item in sets:
        args += ["--set", item]
    return args


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "privatune.cli", "simulate", *args]


def _held(tiny_bert: Path, folder: Path, marker: Path) -> list[str]:
    """The run through the Python API, with client 0 holding back its round-3 reply."""
    args = _args(tiny_bert)
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    script = (
        "from pathlib import Path\n"
        "from common.config import load_config\n"
        "from simulations.run import simulate\n"
        "from tests.support.fault_mods import hold_after_reply\n"
        f"config = load_config({str(ROOT / 'examples' / 'demo.toml')!r}, {sets!r})\n"
        f"mod = hold_after_reply(Path({str(marker)!r}), partition=0, server_round=3)\n"
        f"simulate(config, {str(folder)!r}, report=False, client_mods=[mod])\n"
    )
    return [sys.executable, "-c", script]


def _env() -> dict[str, str]:
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _checkpoint_round(folder: Path) -> int:
    try:
        return int(json.loads((folder / "checkpoint.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return -1


def _kill_when(proc: subprocess.Popen, marker: Path) -> None:
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "client 0 never answered round 3"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run's process and its Ray processes
    proc.wait(timeout=60)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _run(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def test_run_killed_mid_round_resumes_with_every_round_once_and_the_same_ledger(
    tiny_bert: Path, tmp_path: Path
) -> None:
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    marker = tmp_path / "client-0-replied"
    first = _run(_held(tiny_bert, killed, marker), tmp_path / "killed.log")
    oracle = _run(_cli(*_args(tiny_bert), "--output", str(reference)), tmp_path / "ref.log")
    try:
        _kill_when(first, marker)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    assert _checkpoint_round(killed) == 2  # round 3 was in flight
    kept = json.loads((killed / "client_ledgers" / "0.json").read_text())
    assert kept["rounds"] == [1, 2, 3]  # client 0 had trained and charged round 3

    resumed = subprocess.run(
        _cli("--resume", str(killed), "--no-report"), cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "round 3/4" in resumed.stderr and "round 1/4" not in resumed.stderr
    assert oracle.wait(timeout=900) == 0, (tmp_path / "ref.log").read_text()[-3000:]

    rows, ref_rows = _metrics(killed), _metrics(reference)
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]
    assert json.loads((killed / "summary.json").read_text())["rounds_completed"] == 4
    for n in (1, 2, 3, 4):
        assert (killed / "checkpoints" / f"round-{n}" / "adapter_model.safetensors").is_file()

    # The privacy ledgers equal the uninterrupted run's: same entries, steps and ε; round 3
    # once, paid for by the reply client 0 kept before the kill.
    ledger = json.loads((killed / "privacy_ledger.json").read_text())["clients"]
    ref_ledger = json.loads((reference / "privacy_ledger.json").read_text())["clients"]
    assert set(ledger) == set(ref_ledger) == {"0", "1", "2"}
    for cid, entry in ledger.items():
        assert entry["steps"] == ref_ledger[cid]["steps"] == 4 * 2
        assert entry["history"] == ref_ledger[cid]["history"]
        assert entry["epsilon"] == pytest.approx(ref_ledger[cid]["epsilon"], rel=1e-12)
        assert entry["rounds"] == [1, 2, 3, 4]
        client_file = json.loads((killed / "client_ledgers" / f"{cid}.json").read_text())
        assert client_file["history"] == entry["history"]
        assert client_file["rounds"] == [1, 2, 3, 4] and len(set(client_file["keys"])) == 4
    assert (
        json.loads((killed / "client_ledgers" / "0.json").read_text())["keys"][:3] == kept["keys"]
    )
    for row, ref in zip(rows, ref_rows, strict=True):
        assert row.get("client_epsilon") == ref.get("client_epsilon")

    # A finished run is not resumed again.
    again = subprocess.run(
        _cli("--resume", str(killed)), cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 2 and "already finished" in again.stderr

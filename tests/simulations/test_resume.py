"""A killed simulation resumes from its last completed round, losing and repeating nothing.

The run is a real `privatune simulate` process (tiny model, DP-SGD, FedAvgM with
momentum, so the server optimiser's state matters), killed with SIGKILL — with its whole
process group, Ray included — once round 2's checkpoint exists, then resumed with
`--resume`. An uninterrupted run of the same config and seed is the oracle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

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
    return [sys.executable, "-m", "common.cli", "simulate", *args]


def _env() -> dict[str, str]:
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _checkpoint_round(folder: Path) -> int:
    try:
        return int(json.loads((folder / "checkpoint.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return -1


def _kill_after_round(proc: subprocess.Popen, folder: Path, server_round: int) -> None:
    deadline = time.monotonic() + 600
    while _checkpoint_round(folder) < server_round:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "round 2 never completed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI process and its Ray processes
    proc.wait(timeout=60)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _run(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def test_killed_run_resumes_with_every_round_once_and_the_same_ledger(
    tiny_bert: Path, tmp_path: Path
) -> None:
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    first = _run(_cli(*_args(tiny_bert), "--output", str(killed)), tmp_path / "killed.log")
    oracle = _run(_cli(*_args(tiny_bert), "--output", str(reference)), tmp_path / "ref.log")
    try:
        _kill_after_round(first, killed, 2)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    done = _checkpoint_round(killed)
    assert done >= 2

    resumed = subprocess.run(
        _cli("--resume", str(killed), "--no-report"), cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"round {done + 1}/4" in resumed.stderr and "round 1/4" not in resumed.stderr
    assert oracle.wait(timeout=900) == 0, (tmp_path / "ref.log").read_text()[-3000:]

    rows, ref_rows = _metrics(killed), _metrics(reference)
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]
    assert json.loads((killed / "summary.json").read_text())["rounds_completed"] == 4
    for n in (1, 2, 3, 4):
        assert (killed / "checkpoints" / f"round-{n}" / "adapter_model.safetensors").is_file()

    # The privacy ledgers equal the uninterrupted run's: same entries, steps and ε.
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

    # The same computation: per-round ε, and the global adapter (FedAvgM momentum restored).
    for row, ref in zip(rows, ref_rows, strict=True):
        assert row.get("client_epsilon") == ref.get("client_epsilon")
        assert row["eval_loss"] == pytest.approx(ref["eval_loss"], rel=1e-4)
    final = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    ref_final = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    assert final.keys() == ref_final.keys()
    for name in final:
        np.testing.assert_allclose(final[name], ref_final[name], rtol=1e-4, atol=1e-6)

    # A finished run is not resumed again.
    again = subprocess.run(
        _cli("--resume", str(killed)), cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 2 and "already finished" in again.stderr

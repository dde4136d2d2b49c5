"""The server checkpoint: exact round trips through the file, and clear refusals on resume.

Oracles: a second, uninterrupted object (optimiser, RNG) continued side by side with the
one restored from the file must produce bit-identical results.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from common.errors import PrivatuneError
from common.privacy.ledger import PrivacyLedger
from server.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from server.ledgers import LedgerBook
from server.outputs import RunOutputs
from server.resume import check_resumable, config_differences, rewind_metrics
from server.strategy.server_opt import build_server_optimizer


def _arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]


def _checkpoint(**changes) -> Checkpoint:  # type: ignore[no-untyped-def]
    values = dict(
        round=2,
        run_key="k",
        global_arrays=_arrays(0),
        server_optimizer=build_server_optimizer("fedavg").state_dict(),
        rng=rng_state(),
    )
    values.update(changes)
    return Checkpoint(**values)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_server_optimiser_and_global_resume_bit_for_bit(tmp_path: Path, name: str) -> None:
    """Two rounds, checkpoint to a file, two more rounds: same as four uninterrupted."""
    hyper = {"server_momentum": 0.9} if name == "fedavgm" else {}
    deltas = [[d * 0.1 for d in _arrays(s)] for s in range(1, 5)]
    straight = build_server_optimizer(name, **hyper)
    weights = _arrays(0)
    for delta in deltas:
        weights = straight.step(weights, delta)

    first = build_server_optimizer(name, **hyper)
    half = _arrays(0)
    for delta in deltas[:2]:
        half = first.step(half, delta)
    save_checkpoint(tmp_path, _checkpoint(global_arrays=half, server_optimizer=first.state_dict()))
    loaded = load_checkpoint(tmp_path)
    second = build_server_optimizer(name, **hyper)
    second.load_state_dict(loaded.server_optimizer)
    resumed = loaded.global_arrays
    for a, b in zip(resumed, half, strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    for delta in deltas[2:]:
        resumed = second.step(resumed, delta)
    for a, b in zip(resumed, weights, strict=True):
        assert np.array_equal(a, b)


def test_rng_state_round_trips_through_the_file(tmp_path: Path) -> None:
    """Flower samples clients with `random`; nothing of numpy's (or any noise) is saved."""
    random.seed(7)
    random.random()
    save_checkpoint(tmp_path, _checkpoint(rng=rng_state()))
    expected = (random.sample(range(100), 10), random.gauss(0, 1))
    random.seed(0)
    restore_rng(load_checkpoint(tmp_path).rng)
    assert (random.sample(range(100), 10), random.gauss(0, 1)) == expected
    assert set(load_checkpoint(tmp_path).rng) == {"python"}


def test_checkpoint_keeps_ledgers_and_counters(tmp_path: Path) -> None:
    book = LedgerBook(1e-5)
    ledger = PrivacyLedger(delta=1e-5, budget=8.0)
    ledger.record((1.1, 0.02, 10), run="k", server_round=1)
    book.update({"3": ledger.to_dict()})
    entries = [(1.0, 0.4, 1), (1.0, 0.25, 1)]
    save_checkpoint(
        tmp_path, _checkpoint(ledgers=book.to_dict(), central_entries=entries, stopped=True)
    )
    loaded = load_checkpoint(tmp_path)
    again = LedgerBook(1e-5)
    again.update(loaded.ledgers["clients"])
    assert again.to_dict() == book.to_dict()
    assert loaded.central_entries == entries and loaded.stopped and not loaded.finished
    # Written atomically: no temporary file is left next to it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]


def test_missing_or_corrupt_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(PrivatuneError, match="no checkpoint.json there"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(PrivatuneError, match=r"checkpoint.json: unreadable checkpoint"):
        load_checkpoint(tmp_path)


def _run_folder(tmp_path: Path, *extra: str) -> Path:
    """A run folder as a killed run leaves it: config, rounds 0-3 in metrics, round-2 state."""
    folder = tmp_path / "run"
    outputs = RunOutputs(folder)
    outputs.write_config(load_config(None, ["federation.rounds=4", *extra]).to_toml())
    for n in range(4):
        outputs.append_metrics({"round": n})
    save_checkpoint(folder, _checkpoint(round=2))
    return folder


def test_resume_accepts_the_saved_config_and_execution_settings(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path)
    config, checkpoint = check_resumable(folder)
    assert config.federation.rounds == 4 and checkpoint.round == 2
    faster = load_config(
        None, ["federation.rounds=4", "training.threads=2", "federation.round-timeout=60"]
    )
    assert check_resumable(folder, faster)[0].training.threads == 2


def test_resume_refuses_a_config_that_changes_the_run_naming_each_key(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path)
    other = load_config(None, ["federation.rounds=6", "training.lr=0.1"])
    with pytest.raises(PrivatuneError) as info:
        check_resumable(folder, other)
    text = str(info.value)
    assert "config.resolved.toml" in text
    assert "federation.rounds: 4 in the saved config, 6 now" in text
    assert "training.lr: 0.05 in the saved config, 0.1 now" in text
    saved = load_config(folder / "config.resolved.toml")
    assert config_differences(saved, saved) == []


def test_resume_refuses_a_finished_run(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path)
    save_checkpoint(folder, _checkpoint(round=4, finished=True))
    with pytest.raises(PrivatuneError, match="already finished"):
        check_resumable(folder)


@pytest.mark.parametrize(
    ("outcome", "resumable"),
    [("failed", True), ("completed", False), ("refused", False), ("budget", False)],
)
def test_a_failed_run_may_be_resumed_a_run_that_ended_may_not(
    tmp_path: Path, outcome: str, resumable: bool
) -> None:
    """A failed run writes its summary too, and stays resumable from its last round."""
    import json

    folder = _run_folder(tmp_path)
    (folder / "summary.json").write_text(json.dumps({"outcome": outcome}))
    if resumable:
        assert check_resumable(folder)[1].round == 2
    else:
        with pytest.raises(PrivatuneError, match="already finished"):
            check_resumable(folder)


def test_rewind_drops_rounds_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path)
    with open(folder / "metrics.jsonl", "a") as handle:
        handle.write('{"round": 4, "trun')  # killed mid-line
    kept = rewind_metrics(folder, 2)
    assert [r["round"] for r in kept] == [0, 1, 2]
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]
    with pytest.raises(PrivatuneError, match="no line for round 3"):
        rewind_metrics(folder, 3)


def test_simulate_cli_refuses_to_resume_with_a_different_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any process starts, with the key and the saved file named."""
    from privatune.cli import main

    folder = _run_folder(tmp_path)
    assert main(["simulate", "--resume", str(folder), "--set", "federation.rounds=6"]) == 2
    err = capsys.readouterr().err
    assert "federation.rounds: 4 in the saved config, 6 now" in err
    assert str(folder / "config.resolved.toml") in err
    assert main(["simulate", "--set", "federation.rounds=2"]) == 2
    assert "give --output DIR for a new run, or --resume DIR" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.resolved.toml").write_text(load_config(None, []).to_toml())
    assert main(["simulate", "--resume", str(empty)]) == 2
    assert "no checkpoint.json there" in capsys.readouterr().err


def test_an_older_checkpoint_resumes_unless_it_holds_central_dp_rounds(tmp_path: Path) -> None:
    """Format 1 saved numpy's state and central DP as a count of rounds; the count's
    accounting assumed a sampling that did not happen, so only such runs are refused."""
    save_checkpoint(tmp_path, _checkpoint())
    data = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    data.update(format="privatune-checkpoint/1", noisy_rounds=0)
    data.pop("central_entries")
    data["rng"]["numpy"] = {"kind": "MT19937"}
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(data))
    assert load_checkpoint(tmp_path).central_entries == []
    data["noisy_rounds"] = 3
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(data))
    with pytest.raises(PrivatuneError, match="cannot be continued with a true ε"):
        load_checkpoint(tmp_path)

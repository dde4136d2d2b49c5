"""Faulty clients end to end: a client that crashes, hangs or answers garbage is dropped
from its round, the round completes with the rest, and metrics.jsonl names each event.

Faults are injected by client mods (tests/support/fault_mods.py) inside real Flower
simulations with a tiny model; one simulation per fixture, several checks on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import load_config
from simulations.run import simulate
from tests.support.fault_mods import fault_mod

ROOT = Path(__file__).resolve().parents[2]


def _config(tiny_bert: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{tiny_bert}'",
            "data.demo-examples=200",
            "data.server-eval-examples=50",
            "partition.method='iid'",
            "federation.num-clients=4",
            "federation.clients-per-round=4",
            "federation.min-clients=2",
            "privacy.noise-multiplier=1.0",
            "training.local-steps=2",
            "training.batch-size=16",
            "training.threads=1",
            *extra,
        ],
    )


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _faults(row: dict) -> dict[str, dict]:
    return {f["client_id"]: f for f in row.get("faults", [])}


@pytest.fixture(scope="module")
def crash_and_garbage(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Round 1: client 0 crashes, client 1 sends a NaN. Round 2: client 2 sends a wrong
    shape, client 3 a reply without its example count. Round 3: nobody misbehaves."""
    out = tmp_path_factory.mktemp("faults") / "run"
    faults = {(1, 0): "crash", (1, 1): "nan", (2, 2): "shape", (2, 3): "keys"}
    simulate(
        _config(tiny_bert, "federation.rounds=3"),
        out,
        report=True,
        client_mods=[fault_mod(faults)],
    )
    return out


def test_a_crashing_client_is_dropped_and_named(crash_and_garbage: Path) -> None:
    rows = _metrics(crash_and_garbage)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    crash = _faults(rows[1])["0"]
    assert crash["kind"] == "crash" and crash["stage"] == "fit" and crash["round"] == 1
    assert "RuntimeError: injected crash of partition 0" in crash["reason"]
    assert isinstance(crash["node_id"], int)
    # The round still completed, with the two well-behaved clients.
    assert rows[1]["failed"] is False and rows[1]["num_clients"] == 2
    assert rows[1]["num_failures"] == 2


def test_garbage_replies_are_rejected_and_named(crash_and_garbage: Path) -> None:
    rows = _metrics(crash_and_garbage)
    nan = _faults(rows[1])["1"]
    assert nan["kind"] == "garbage" and "contains NaN or Inf" in nan["reason"]
    round2 = _faults(rows[2])
    assert set(round2) == {"2", "3"}
    assert round2["2"]["kind"] == "garbage" and "has shape" in round2["2"]["reason"]
    # A reply that is not a fit result at all: the server knows the node from round 1.
    assert round2["3"]["kind"] == "garbage" and "unreadable fit reply" in round2["3"]["reason"]
    assert "num_examples" in round2["3"]["reason"]
    assert rows[2]["failed"] is False and rows[2]["num_clients"] == 2
    assert rows[2]["num_failures"] == 2 and rows[2]["num_rejected"] == 1
    # Round 3: everyone is back and nothing is recorded.
    assert rows[3]["num_clients"] == 4 and "faults" not in rows[3]
    # The global adapter stayed finite, and the eval loss is a number every round.
    assert all(isinstance(r["eval_loss"], float) for r in rows)


def test_faults_show_in_the_report(crash_and_garbage: Path) -> None:
    html = (crash_and_garbage / "report.html").read_text()
    assert "faults" in html and "crash" in html and "garbage" in html


# Long enough for round 1, in which every client process first imports torch and builds
# the model; the hung client answers only after the round has moved on.
ROUND_TIMEOUT = 30.0
HANG_SECONDS = ROUND_TIMEOUT + 10.0


@pytest.fixture(scope="module")
def hang(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Round 3: client 2 answers only after the round timeout. Every client is also asked
    to evaluate, so a second wait for the hung one would show in the round's time."""
    out = tmp_path_factory.mktemp("hang") / "run"
    simulate(
        _config(
            tiny_bert,
            "federation.rounds=3",
            f"federation.round-timeout={ROUND_TIMEOUT}",
            "federation.evaluate-clients=4",
        ),
        out,
        report=False,
        client_mods=[fault_mod({(3, 2): "hang"}, hang_seconds=HANG_SECONDS)],
    )
    return out


@pytest.mark.slow  # waits out the round timeout (about a minute in all)
def test_a_hanging_client_is_dropped_after_the_round_timeout(hang: Path) -> None:
    rows = _metrics(hang)
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    (fault,) = rows[3]["faults"]
    assert fault["client_id"] == "2" and fault["kind"] == "timeout" and fault["round"] == 3
    assert f"federation.round-timeout = {ROUND_TIMEOUT} s" in fault["reason"]
    # The round waited for the timeout once (not for the hung client, not again in its
    # evaluation), and used the other three.
    assert ROUND_TIMEOUT <= rows[3]["round_seconds"] < ROUND_TIMEOUT + 8 < HANG_SECONDS
    assert [f["stage"] for f in rows[3]["faults"]] == ["fit"]
    assert rows[3]["failed"] is False and rows[3]["num_clients"] == 3
    assert rows[3]["num_failures"] == 1

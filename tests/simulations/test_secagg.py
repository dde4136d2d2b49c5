"""Secure aggregation end to end: the same sum as plain FedAvg, dropouts, loud failure, masking.

Every test records, inside the clients and before masking, what each client received and
sent (tests/support/fault_mods.py), and checks the server's result against numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.ndarrays_arithmetic import factor_extract
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from common.config import load_config
from simulations.run import simulate
from tests.support.fault_mods import load_record, recording_mod

ROOT = Path(__file__).resolve().parents[2]


def _config(tiny_bert: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{tiny_bert}'",
            "data.demo-examples=300",
            "data.server-eval-examples=50",
            "partition.method='iid'",
            "federation.num-clients=5",
            "federation.clients-per-round=5",
            "federation.min-clients=2",
            "federation.rounds=2",
            "privacy.enabled=false",
            "training.local-steps=3",
            "training.batch-size=16",
            "secure-aggregation.enabled=true",
            *extra,
        ],
    )


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _round(folder: Path, server_round: int) -> dict[int, tuple]:
    return {
        int(p.stem.split("-p")[1]): load_record(p) for p in folder.glob(f"r{server_round}-p*.npz")
    }


def _expected_next_global(records: dict[int, tuple], survivors: list[int]) -> list[np.ndarray]:
    received = records[survivors[0]][0]
    deltas = [records[p][1] for p in survivors]
    weights = [records[p][2] for p in survivors]
    return [
        received[i] + np.average(np.stack([d[i] for d in deltas]), axis=0, weights=weights)
        for i in range(len(received))
    ]


def test_secure_sum_equals_plain_weighted_mean_within_stated_bound(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Round-1 global under SecAgg+ = initial + numpy.average(deltas) within the bound."""
    rec = tmp_path / "rec"
    rec.mkdir()
    out = tmp_path / "run"
    simulate(_config(tiny_bert), out, report=False, client_mods=[recording_mod(rec)])
    rows = _metrics(out)
    assert all(r["secagg"] for r in rows)
    bound = rows[1]["quantization_error_bound"]
    assert 0 < bound < 1e-5
    first, second = _round(rec, 1), _round(rec, 2)
    assert sorted(first) == [0, 1, 2, 3, 4]
    expected = _expected_next_global(first, sorted(first))
    got = second[0][0]
    worst = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected, strict=True))
    assert worst <= bound
    assert worst > 0  # quantisation is real: this is not the plain path in disguise
    # Plain weighted mean differs from secure one by far less than the updates themselves.
    scale = max(float(np.max(np.abs(d))) for d in first[0][1])
    assert worst < 1e-3 * scale


def test_masked_vector_is_not_the_clients_delta(
    tiny_bert: Path, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """What the server receives from one client is masked: unrelated to its delta.

    It arrives as uint32 (narrowed by the client, widened by the server after counting).
    """
    from server.traffic import CountingGrid

    seen: dict[int, list[np.ndarray]] = {}
    original = CountingGrid.pull_messages

    def spy(self, message_ids):  # type: ignore[no-untyped-def]
        replies = list(original(self, message_ids))
        for reply in replies:
            if reply.has_content() and RECORD_KEY_CONFIGS in reply.content.config_records:
                configs = reply.content.config_records[RECORD_KEY_CONFIGS]
                if Key.MASKED_PARAMETERS in configs:
                    vectors = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]]
                    seen[reply.metadata.src_node_id] = factor_extract(vectors)[1]
        return replies

    monkeypatch.setattr(CountingGrid, "pull_messages", spy)
    rec = tmp_path / "rec"
    rec.mkdir()
    simulate(
        _config(tiny_bert, "federation.rounds=1"),
        tmp_path / "run",
        report=False,
        client_mods=[recording_mod(rec)],
    )
    first = _round(rec, 1)
    assert len(seen) == 5
    for _, delta, _, node in first.values():
        masked = np.concatenate([m.ravel() for m in seen[node]]).astype(np.float64)
        plain = np.concatenate([d.ravel() for d in delta]).astype(np.float64)
        assert masked.shape == plain.shape
        assert {m.dtype for m in seen[node]} == {np.dtype(np.uint32)}
        corr = float(np.corrcoef(masked, plain)[0, 1])
        assert abs(corr) < 0.15, corr
        # Masks are uniform over the modulus: the values span it, unlike a quantised delta.
        assert masked.std() > 2**32 / 8


def test_dropout_after_key_exchange_still_gives_survivors_mean(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """One client of five dies in round 1 after the key exchange: the sum of the rest is exact."""
    rec = tmp_path / "rec"
    rec.mkdir()
    out = tmp_path / "run"
    simulate(
        _config(tiny_bert),
        out,
        report=False,
        client_mods=[recording_mod(rec, fail=frozenset({3}), fail_rounds=frozenset({1}))],
    )
    rows = _metrics(out)
    assert rows[1]["num_clients"] == 4 and rows[1]["failed"] is False
    first, second = _round(rec, 1), _round(rec, 2)
    assert sorted(first) == [0, 1, 2, 4]
    expected = _expected_next_global(first, [0, 1, 2, 4])
    got = second[0][0]
    worst = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected, strict=True))
    assert worst <= rows[1]["quantization_error_bound"]


@pytest.mark.parametrize("on_failure", ["stop", "retry"])
def test_too_many_dropouts_fail_loudly(tiny_bert: Path, tmp_path: Path, on_failure: str) -> None:
    """Three of five die: the round fails, is recorded, and the run stops with an error:
    one line, a summary that says so (exit 1), the rounds after it never run."""
    rec = tmp_path / "rec"
    rec.mkdir()
    out = tmp_path / "run"
    summary = simulate(
        _config(
            tiny_bert,
            f"secure-aggregation.on-failure='{on_failure}'",
            "secure-aggregation.max-retries=1",
        ),
        out,
        report=False,
        client_mods=[recording_mod(rec, fail=frozenset({0, 1, 2}), fail_rounds=frozenset({1}))],
    )
    assert summary["outcome"] == "failed" and summary["exit_code"] == 1
    assert summary["error"].startswith("round 1: secure aggregation halted")
    assert summary["rounds_failed"] == 1 and summary["rounds_completed"] == 0
    rows = _metrics(out)
    failed = [r for r in rows if r.get("failed")]
    assert failed and all(r["round"] == 1 for r in failed)
    assert len(failed) == (2 if on_failure == "retry" else 1)
    assert "secure aggregation halted" in failed[-1]["error"]
    assert max(r["round"] for r in rows) == 1

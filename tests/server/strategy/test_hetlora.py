"""HetLoRA zero-padding aggregation against a numpy oracle; truncation and padding."""

from __future__ import annotations

import re

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from common.adapters import AdapterSpec
from common.hetlora import pad, truncate
from server.strategy.hetlora import HetLoRAFedAvg
from server.strategy.registry import build_strategy

R = 8  # global rank
SPEC = AdapterSpec(
    names=(
        "q.lora_A.default.weight",
        "q.lora_B.default.weight",
        "v.lora_A.default.weight",
        "v.lora_B.default.weight",
        "classifier.modules_to_save.default.weight",
    ),
    shapes=((R, 5), (6, R), (R, 5), (6, R), (3, 6)),
)


def _fitres(arrays, n, **metrics):  # type: ignore[no-untyped-def]
    return (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, metrics))


def _client_delta(rng: np.random.Generator, rank: int) -> list[np.ndarray]:
    shapes = [(rank, 5), (6, rank), (rank, 5), (6, rank), (3, 6)]
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def _oracle(
    initial: list[np.ndarray], deltas: list[list[np.ndarray]], weights: list[float]
) -> list[np.ndarray]:
    """Zero-pad every client's A rows / B columns to rank R by hand, weighted mean, add."""
    out = []
    for i, shape in enumerate(SPEC.shapes):
        acc = np.zeros(shape, dtype=np.float64)
        for delta, w in zip(deltas, weights, strict=True):
            padded = np.zeros(shape, dtype=np.float64)
            d = delta[i]
            padded[: d.shape[0], : d.shape[1]] = d  # A: rows 0..r-1; B: columns 0..r-1
            acc += w * padded
        out.append(initial[i].astype(np.float64) + acc / sum(weights))
    return out


def _strategy(initial):  # type: ignore[no-untyped-def]
    return build_strategy("hetlora", spec=SPEC, initial=initial, clients_per_round=3, min_clients=2)


def test_hetlora_aggregation_equals_numpy_zero_padding_oracle() -> None:
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=s).astype(np.float32) for s in SPEC.shapes]
    ranks, sizes = [2, 4, 8], [40.0, 25.0, 100.0]
    deltas = [_client_delta(rng, r) for r in ranks]
    strategy = _strategy(initial)
    assert isinstance(strategy, HetLoRAFedAvg) and strategy.max_rank == R
    results = [
        _fitres(d, int(n), client_id=str(i), lora_rank=r)
        for i, (d, n, r) in enumerate(zip(deltas, sizes, ranks, strict=True))
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    got = parameters_to_ndarrays(params)
    for g, e in zip(got, _oracle(initial, deltas, sizes), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
    # Rank components 4..7 of A come only from the rank-8 client, scaled by its weight.
    a = got[0] - initial[0]
    np.testing.assert_allclose(a[4:], deltas[2][0][4:] * 100 / 165, rtol=1e-5, atol=1e-6)
    assert strategy.records[1]["num_clients"] == 3

    # SecAgg+-style: clients pad before sending and omit lora_rank; same result.
    padded = [pad(SPEC.names, d, SPEC.shapes) for d in deltas]
    again = _strategy(initial)
    params, _ = again.aggregate_fit(
        1, [_fitres(p, int(n)) for p, n in zip(padded, sizes, strict=True)], []
    )
    for g, e in zip(parameters_to_ndarrays(params), got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("rank", "sent_rank", "reason"),
    [
        (4, 2, r"rank 4\).*shape \(2, 5\), expected \(4, 5\)"),
        (9, 9, r"lora_rank 9 is not in 1..8"),
        (0, 2, r"lora_rank 0 is not in 1..8"),
    ],
)
def test_hetlora_rejects_updates_that_do_not_match_the_declared_rank(
    rank: int, sent_rank: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(1)
    initial = [np.zeros(s, dtype=np.float32) for s in SPEC.shapes]
    strategy = _strategy(initial)
    good = [_fitres(_client_delta(rng, 8), 10, lora_rank=8) for _ in range(2)]
    bad = _fitres(_client_delta(rng, sent_rank), 10, client_id="x", lora_rank=rank)
    strategy.aggregate_fit(1, [*good, bad], [])
    assert strategy.records[1]["num_rejected"] == 1
    assert any(re.search(reason, r.message) for r in caplog.records)


def test_truncate_then_pad_keeps_the_leading_components_and_zeros_the_rest() -> None:
    rng = np.random.default_rng(2)
    full = [rng.normal(size=s).astype(np.float32) for s in SPEC.shapes]
    small = truncate(SPEC.names, full, 3)
    assert [a.shape for a in small] == [(3, 5), (6, 3), (3, 5), (6, 3), (3, 6)]
    back = pad(SPEC.names, small, SPEC.shapes)
    np.testing.assert_array_equal(back[0][:3], full[0][:3])
    np.testing.assert_array_equal(back[0][3:], 0)
    np.testing.assert_array_equal(back[1][:, :3], full[1][:, :3])
    np.testing.assert_array_equal(back[1][:, 3:], 0)
    np.testing.assert_array_equal(back[4], full[4])

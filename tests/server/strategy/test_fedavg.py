"""Delta FedAvg against numpy.average, plus validation of what clients send."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from common.adapters import AdapterSpec
from server.strategy.fedavg import DeltaFedAvg, weighted_mean

SPEC = AdapterSpec(names=("a", "b"), shapes=((3, 2), (4,)))


def _arrays(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.normal(size=s).astype(np.float32) for s in SPEC.shapes]


def _fitres(arrays, n, **metrics):  # type: ignore[no-untyped-def]
    return (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, metrics))


def _strategy(initial, **kwargs):  # type: ignore[no-untyped-def]
    return DeltaFedAvg(spec=SPEC, initial=initial, clients_per_round=3, min_clients=2, **kwargs)


def test_weighted_mean_equals_numpy_average() -> None:
    rng = np.random.default_rng(0)
    updates = [_arrays(rng) for _ in range(4)]
    weights = [10.0, 3.0, 7.0, 1.0]
    got = weighted_mean(updates, weights)
    for i in range(len(SPEC.shapes)):
        expected = np.average(np.stack([u[i] for u in updates]), axis=0, weights=weights)
        np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-7)


def test_aggregate_fit_moves_global_by_weighted_mean_delta() -> None:
    rng = np.random.default_rng(1)
    initial = _arrays(rng)
    deltas = [_arrays(rng) for _ in range(3)]
    sizes = [50, 20, 130]
    strategy = _strategy(initial)
    results = [
        _fitres(d, n, client_id=str(i), train_loss=1.0 + i)
        for i, (d, n) in enumerate(zip(deltas, sizes))
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    new = parameters_to_ndarrays(params)
    for i in range(len(SPEC.shapes)):
        mean = np.average(np.stack([d[i] for d in deltas]), axis=0, weights=sizes)
        np.testing.assert_allclose(new[i], initial[i] + mean, rtol=1e-5, atol=1e-6)
    record = strategy.records[1]
    assert record["num_clients"] == 3
    assert record["train_loss"] == pytest.approx(np.average([1.0, 2.0, 3.0], weights=sizes))
    # Serialised payload: raw float32 bytes plus each array's .npy header.
    sent = sum(len(t) for d in deltas for t in ndarrays_to_parameters(d).tensors)
    assert record["update_bytes"] == sent
    assert 3 * 4 * (6 + 4) < sent < 3 * 4 * (6 + 4) + 3 * 2 * 200


def test_fixed_weight_hides_example_counts() -> None:
    rng = np.random.default_rng(2)
    initial = _arrays(rng)
    deltas = [_arrays(rng) for _ in range(2)]
    strategy = _strategy(initial, fixed_weight=True)
    params, _ = strategy.aggregate_fit(1, [_fitres(deltas[0], 1), _fitres(deltas[1], 1000)], [])
    new = parameters_to_ndarrays(params)
    np.testing.assert_allclose(new[0], initial[0] + (deltas[0][0] + deltas[1][0]) / 2, atol=1e-6)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (lambda a: a[:1], "1 arrays, expected 2"),
        (lambda a: [a[0].reshape(2, 3), a[1]], "shape (2, 3), expected (3, 2)"),
        (lambda a: [a[0], np.full(4, np.nan, dtype=np.float32)], "NaN or Inf"),
        (lambda a: [a[0], np.full(4, np.inf, dtype=np.float32)], "NaN or Inf"),
        (lambda a: [a[0].astype(np.int32), a[1]], "dtype int32"),
    ],
)
def test_bad_updates_are_rejected_and_the_rest_aggregated(bad, reason, caplog) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    initial = _arrays(rng)
    good = [_arrays(rng) for _ in range(2)]
    strategy = _strategy(initial)
    results = [
        _fitres(good[0], 10, client_id="0"),
        _fitres(good[1], 30, client_id="1"),
        _fitres(bad(_arrays(rng)), 10, client_id="2"),
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert params is not None
    new = parameters_to_ndarrays(params)
    mean = np.average(np.stack([g[1] for g in good]), axis=0, weights=[10, 30])
    np.testing.assert_allclose(new[1], initial[1] + mean, rtol=1e-5, atol=1e-6)
    assert strategy.records[1]["num_rejected"] == 1
    assert "client 2: " in caplog.text and reason in caplog.text


def test_refusals_have_no_weight_and_too_few_updates_fail_the_round() -> None:
    rng = np.random.default_rng(4)
    initial = _arrays(rng)
    zeros = [np.zeros(s, np.float32) for s in SPEC.shapes]
    strategy = _strategy(initial)
    results = [
        _fitres(_arrays(rng), 10, client_id="0"),
        _fitres(zeros, 0, client_id="1", refused=True, refusal="budget"),
    ]
    params, _ = strategy.aggregate_fit(1, results, [RuntimeError("client died")])
    assert params is None
    record = strategy.records[1]
    assert record["failed"] is True and "min-clients is 2" in record["error"]
    assert record["num_refused"] == 1 and record["num_failures"] == 1
    assert record["refusals"] == ["client 1: budget"]
    assert record["error"].endswith("; refused: client 1: budget")
    for got, want in zip(strategy.global_arrays, initial):
        np.testing.assert_array_equal(got, want)


def test_update_norm_bound() -> None:
    rng = np.random.default_rng(5)
    initial = _arrays(rng)
    strategy = _strategy(initial, max_update_norm=1.0)
    big = [a * 100 for a in _arrays(rng)]
    small = [a * 1e-3 for a in _arrays(rng)]
    params, _ = strategy.aggregate_fit(
        1, [_fitres(big, 5), _fitres(small, 5), _fitres(small, 5)], []
    )
    assert params is not None and strategy.records[1]["num_rejected"] == 1


def test_server_optimizer_moves_the_global_adapter() -> None:
    """With FedAdam the global moves by FedAdam's step on the mean delta, not by the delta."""
    from server.strategy.server_opt import FedAdam

    rng = np.random.default_rng(6)
    initial = _arrays(rng)
    deltas = [_arrays(rng) for _ in range(2)]
    oracle = FedAdam()
    expected = oracle.step(initial, weighted_mean(deltas, [1.0, 3.0]))
    strategy = _strategy(initial, server_optimizer=FedAdam())
    params, _ = strategy.aggregate_fit(1, [_fitres(deltas[0], 1), _fitres(deltas[1], 3)], [])
    for got, want in zip(parameters_to_ndarrays(params), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    plain = [a + d for a, d in zip(initial, weighted_mean(deltas, [1.0, 3.0]), strict=True)]
    assert not np.allclose(parameters_to_ndarrays(params)[0], plain[0])


def test_server_optimizer_hyperparameters_are_only_those_set() -> None:
    from common.config import load_config

    config = load_config(None, ["server-optimizer.name='fedadam'", "server-optimizer.lr=0.05"])
    assert config.server_optimizer.hyper() == {"eta": 0.05}

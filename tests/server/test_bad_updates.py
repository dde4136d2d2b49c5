"""The bad-update table: what a broken or hostile client can send, rejected on the server.

Each case puts one bad reply among two good ones. The server must reject it (logging
the client and the reason), average the good ones exactly as if the bad one had never
arrived, and carry on: no exception escapes ``aggregate_fit``. The basic cases (wrong
count, shape, int dtype, NaN, Inf, norm) are in strategy/test_fedavg.py; these are the
ones that used to crash the round or pass unnoticed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)

from common.adapters import AdapterSpec
from common.config import load_config
from common.errors import ConfigError
from server.strategy.fedavg import DeltaFedAvg, largest_valid_update

SPEC = AdapterSpec(names=("lora_A", "lora_B", "head"), shapes=((4, 8), (8, 4), (3,)))
GOOD_WEIGHTS = (10, 30)


def _arrays(rng: np.random.Generator, scale: float = 0.01) -> list[np.ndarray]:
    return [(scale * rng.normal(size=s)).astype(np.float32) for s in SPEC.shapes]


def _tensors(*arrays: Any) -> Parameters:
    """Raw .npy payloads, as Flower would carry them, including ones numpy refuses."""
    tensors = []
    for array in arrays:
        if isinstance(array, bytes):
            tensors.append(array)
            continue
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=True)
        tensors.append(buffer.getvalue())
    return Parameters(tensors=tensors, tensor_type="numpy.ndarray")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@dataclass(frozen=True)
class Bad:
    """A bad reply: its payload from a good update, its weight, metrics, strategy options."""

    payload: Callable[[list[np.ndarray]], Parameters]
    reason: str
    num_examples: int = 10
    metrics: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    rejected: bool = True


def _replace(index: int, value: Any) -> Callable[[list[np.ndarray]], Parameters]:
    def make(arrays: list[np.ndarray]) -> Parameters:
        out: list[Any] = list(arrays)
        out[index] = value(arrays[index]) if callable(value) else value
        return _tensors(*out)

    return make


def _with_nan_at_one_element(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[5] = np.nan
    return a


PICKLED = _tensors(np.array([{"x": 1}], dtype=object)).tensors[0]

TABLE = {
    # -- wrong keys: arrays travel as an ordered list, so another adapter shows as count/shape
    "extra-array-from-another-adapter": Bad(
        lambda a: _tensors(*a, np.zeros((8, 8), np.float32)), "4 arrays, expected 3"
    ),
    "arrays-in-the-wrong-order": Bad(
        lambda a: _tensors(a[1], a[0], a[2]), "lora_A has shape (8, 4), expected (4, 8)"
    ),
    "other-lora-rank": Bad(
        _replace(0, np.zeros((2, 8), np.float32)), "lora_A has shape (2, 8), expected (4, 8)"
    ),
    "scalar-instead-of-array": Bad(
        _replace(2, np.float32(1.0)), "head has shape (), expected (3,)"
    ),
    # -- wrong dtypes
    "complex-dtype": Bad(_replace(1, lambda x: x.astype(np.complex64)), "dtype complex64"),
    "bool-dtype": Bad(_replace(2, np.array([True, False, True])), "dtype bool"),
    "string-dtype": Bad(_replace(2, np.array(["a", "b", "c"])), "dtype <U1"),
    # -- payloads numpy cannot (or must not) decode: used to crash the round
    "pickled-object-array": Bad(_replace(0, PICKLED), "not a list of numpy arrays"),
    "garbage-bytes": Bad(lambda a: _tensors(b"garbage", *a[1:]), "not a list of numpy arrays"),
    "truncated-npy": Bad(_replace(1, lambda x: _npy(x)[:-7]), "not a list of numpy arrays"),
    # -- non-finite values
    "one-nan-element": Bad(_replace(0, _with_nan_at_one_element), "lora_A contains NaN or Inf"),
    "negative-inf": Bad(_replace(2, np.array([0, -np.inf, 0], np.float32)), "head contains NaN"),
    "float16-inf": Bad(
        _replace(2, np.array([np.inf, 0, 0], np.float16)), "head contains NaN or Inf"
    ),
    # -- norm above the configured bound (federation.max-update-norm)
    "norm-above-bound": Bad(
        lambda a: _tensors(*[x * 1e4 for x in a]),
        "exceeds the bound 1",
        options={"max_update_norm": 1.0},
    ),
    # -- oversize messages: checked before decoding
    "oversize-payload": Bad(
        lambda a: _tensors(*a, np.zeros(100_000, np.float64)),
        f"bytes, more than the {largest_valid_update(SPEC)} allowed",
    ),
    "oversize-configured-bound": Bad(
        lambda a: _tensors(*[x.astype(np.float64) for x in a]),
        "more than the 800 allowed",
        options={"max_update_bytes": 800},  # float32 updates take 652 bytes, float64 920
    ),
    # -- weights: a negative weight would pull the mean the other way
    "negative-num-examples": Bad(ndarrays_to_parameters, "num_examples = -100", num_examples=-100),
    "zero-num-examples": Bad(ndarrays_to_parameters, "num_examples = 0", num_examples=0),
    # -- malformed metrics: logged and ignored, the update itself is fine
    "epsilon-not-a-number": Bad(
        ndarrays_to_parameters,
        "malformed privacy metrics",
        metrics={"epsilon": "high"},
        rejected=False,
    ),
    "privacy-history-not-json": Bad(
        ndarrays_to_parameters,
        "malformed privacy metrics",
        metrics={"privacy_history": "{"},
        rejected=False,
    ),
    "privacy-history-wrong-shape": Bad(
        ndarrays_to_parameters,
        "malformed privacy metrics",
        metrics={"privacy_history": '{"delta": 1e-5, "history": [[1.0, 0.1]]}'},
        rejected=False,
    ),
}


def _fitres(parameters: Parameters, n: int, **metrics: Any) -> tuple[None, FitRes]:
    return (None, FitRes(Status(Code.OK, ""), parameters, n, metrics))


@pytest.mark.parametrize("bad", list(TABLE.values()), ids=list(TABLE))
def test_bad_update_is_rejected_and_the_rest_aggregated(
    bad: Bad, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    initial = _arrays(rng)
    good = [_arrays(rng) for _ in GOOD_WEIGHTS]
    strategy = DeltaFedAvg(
        spec=SPEC, initial=initial, clients_per_round=3, min_clients=2, **bad.options
    )
    results = [
        _fitres(ndarrays_to_parameters(g), n, client_id=str(i))
        for i, (g, n) in enumerate(zip(good, GOOD_WEIGHTS, strict=True))
    ]
    bad_arrays = _arrays(rng)
    results.append(
        _fitres(bad.payload(bad_arrays), bad.num_examples, client_id="evil", **bad.metrics)
    )

    params, _ = strategy.aggregate_fit(1, results, [])

    assert params is not None
    record = strategy.records[1]
    assert record["num_rejected"] == int(bad.rejected)
    if bad.rejected:
        ((client, reason),) = [(r["client_id"], r["reason"]) for r in record["rejections"]]
        assert client == "evil" and bad.reason in reason
    assert "evil" in caplog.text and bad.reason in caplog.text, caplog.text
    contributors = list(zip(good, GOOD_WEIGHTS, strict=True))
    if not bad.rejected:
        contributors.append((bad_arrays, bad.num_examples))
    weights = [n for _, n in contributors]
    for i, got in enumerate(parameters_to_ndarrays(params)):
        mean = np.average(np.stack([u[i] for u, _ in contributors]), axis=0, weights=weights)
        np.testing.assert_allclose(got, initial[i] + mean, rtol=1e-5, atol=1e-7)


def test_table_size() -> None:
    assert len(TABLE) >= 15


def test_every_update_rejected_fails_the_round_cleanly() -> None:
    """A round with no usable update is a recorded failure, not an exception."""
    rng = np.random.default_rng(1)
    initial = _arrays(rng)
    strategy = DeltaFedAvg(spec=SPEC, initial=initial, clients_per_round=2, min_clients=1)
    params, _ = strategy.aggregate_fit(
        1,
        [_fitres(ndarrays_to_parameters(_arrays(rng)), 0), _fitres(_tensors(b"x"), 5)],
        [],
    )
    assert params is None
    assert strategy.records[1]["failed"] is True and strategy.records[1]["num_rejected"] == 2
    for got, want in zip(strategy.global_arrays, initial, strict=True):
        np.testing.assert_array_equal(got, want)


def test_fixed_weight_accepts_any_reported_count() -> None:
    """With fixed-weight every client reports 1 (or any count): the count is not a weight."""
    rng = np.random.default_rng(2)
    initial = _arrays(rng)
    strategy = DeltaFedAvg(
        spec=SPEC, initial=initial, clients_per_round=2, min_clients=2, fixed_weight=True
    )
    deltas = [_arrays(rng), _arrays(rng)]
    params, _ = strategy.aggregate_fit(
        1, [_fitres(ndarrays_to_parameters(d), 0) for d in deltas], []
    )
    assert params is not None and strategy.records[1]["num_rejected"] == 0


def test_update_bounds_are_config_keys() -> None:
    config = load_config(
        None, ["federation.max-update-norm=2.5", "federation.max-update-bytes=1000000"]
    )
    assert config.federation.max_update_norm == 2.5
    assert config.federation.max_update_bytes == 1_000_000
    assert load_config().federation.max_update_norm is None
    with pytest.raises(ConfigError, match="federation.max-update-norm: Input should be greater"):
        load_config(None, ["federation.max-update-norm=0"])
    with pytest.raises(ConfigError, match="federation.max-update-bytes: Input should be a valid"):
        load_config(None, ["federation.max-update-bytes=1.5"])


def test_server_app_passes_the_bounds_to_the_strategy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """run_server hands federation.max-update-norm/-bytes to the strategy it builds."""
    import server.app as app

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_build(name: str, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop

    class FakeModel:
        def __init__(self, config: Any) -> None:
            self.spec, self.initial, self.model = SPEC, [], None

        def evaluate(self, *args: Any) -> None:
            return None

        def general_scores(self, *args: Any) -> None:
            return None

    monkeypatch.setattr(app, "build_strategy", fake_build)
    monkeypatch.setattr(app, "ServerModel", FakeModel)
    config = load_config(
        None,
        [
            "federation.max-update-norm=3.0",
            "federation.max-update-bytes=4096",
            "data.server-eval=''",
        ],
    )
    with pytest.raises(Stop):
        app.run_server(None, None, config, tmp_path)  # type: ignore[arg-type]
    assert seen["max_update_norm"] == 3.0 and seen["max_update_bytes"] == 4096

"""Server optimisers against hand arithmetic and against Flower's own legacy strategies.

The hand-computed cases pin the formulas; the oracle cases pin that "same as Flower"
stays true (Flower sees full parameters, we see the weighted-mean delta).
"""

from __future__ import annotations

import inspect
import json
from math import sqrt
from typing import Any

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import strategy as flwr_strategy

from common.errors import ConfigError
from server.strategy.fedavg import weighted_mean
from server.strategy.server_opt import (
    SERVER_OPTIMIZERS,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedAvgOpt,
    FedYogi,
    ServerOptimizer,
    build_server_optimizer,
    hyper_parameters,
)

X0 = [1.0, 2.0, 3.0]
D1 = [0.5, -1.0, 0.0]  # the 0 checks sign(0) in Yogi and 0/(0+τ) everywhere
D2 = [0.01, 1.0, 2.0]  # Δ2[0]² < v1[0], so Yogi's sign(v − Δ²) is +1 there


def _two_steps(opt: ServerOptimizer) -> tuple[list[float], list[float]]:
    x0 = [np.array(X0, dtype=np.float32)]
    x1 = opt.step(x0, [np.array(D1, dtype=np.float32)])
    x2 = opt.step(x1, [np.array(D2, dtype=np.float32)])
    return [float(v) for v in x1[0]], [float(v) for v in x2[0]]


# ------------------------------------------------------------- hand arithmetic


def _fedavg() -> tuple[list[float], list[float]]:
    # η = 0.5: x1 = x0 + 0.5·Δ1, x2 = x1 + 0.5·Δ2
    x1 = [1.0 + 0.25, 2.0 - 0.5, 3.0]
    x2 = [1.25 + 0.005, 1.5 + 0.5, 3.0 + 1.0]
    return x1, x2


def _fedavgm() -> tuple[list[float], list[float]]:
    # η = 0.5, β = 0.9: v1 = Δ1; x1 = x0 + 0.5·v1
    x1 = [1.0 + 0.5 * 0.5, 2.0 + 0.5 * -1.0, 3.0]
    # v2 = 0.9·v1 + Δ2 = [0.45 + 0.01, -0.9 + 1.0, 0 + 2.0] = [0.46, 0.1, 2.0]
    x2 = [1.25 + 0.5 * 0.46, 1.5 + 0.5 * 0.1, 3.0 + 0.5 * 2.0]
    return x1, x2


def _fedadam() -> tuple[list[float], list[float]]:
    # η = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3
    # m1 = 0.1·Δ1 = [0.05, -0.1, 0]; v1 = 0.01·Δ1² = [0.0025, 0.01, 0]; √v1 = [0.05, 0.1, 0]
    # Flower's bias correction uses exponent t+1: η1 = 0.1·√(1 − 0.99²)/(1 − 0.9²)
    eta1 = 0.1 * sqrt(1 - 0.9801) / (1 - 0.81)
    x1 = [1.0 + eta1 * 0.05 / 0.051, 2.0 + eta1 * -0.1 / 0.101, 3.0 + eta1 * 0.0 / 0.001]
    # m2 = 0.9·m1 + 0.1·Δ2 = [0.045 + 0.001, -0.09 + 0.1, 0 + 0.2] = [0.046, 0.01, 0.2]
    # v2 = 0.99·v1 + 0.01·Δ2² = [0.002475 + 0.000001, 0.0099 + 0.01, 0 + 0.04]
    eta2 = 0.1 * sqrt(1 - 0.970299) / (1 - 0.729)
    x2 = [
        x1[0] + eta2 * 0.046 / (sqrt(0.002476) + 0.001),
        x1[1] + eta2 * 0.01 / (sqrt(0.0199) + 0.001),
        x1[2] + eta2 * 0.2 / (0.2 + 0.001),
    ]
    return x1, x2


def _fedyogi() -> tuple[list[float], list[float]]:
    # η = 0.01, β1 = 0.9, β2 = 0.99, τ = 1e-3 (Flower's defaults); m as for Adam
    # v1 = 0 − 0.01·Δ1²·sign(0 − Δ1²) = [0.0025, 0.01, 0]
    x1 = [1.0 + 0.01 * 0.05 / 0.051, 2.0 + 0.01 * -0.1 / 0.101, 3.0]
    # Δ2² = [0.0001, 1, 4]; sign(v1 − Δ2²) = [+1, -1, -1]
    # v2 = [0.0025 − 0.000001, 0.01 + 0.01, 0 + 0.04] = [0.002499, 0.02, 0.04]
    x2 = [
        x1[0] + 0.01 * 0.046 / (sqrt(0.002499) + 0.001),
        x1[1] + 0.01 * 0.01 / (sqrt(0.02) + 0.001),
        x1[2] + 0.01 * 0.2 / (0.2 + 0.001),
    ]
    return x1, x2


def _fedadagrad() -> tuple[list[float], list[float]]:
    # η = 0.1, τ = 1e-3, m = Δ: v1 = Δ1² = [0.25, 1, 0]
    x1 = [1.0 + 0.1 * 0.5 / 0.501, 2.0 + 0.1 * -1.0 / 1.001, 3.0]
    # v2 = v1 + Δ2² = [0.2501, 2, 4]
    x2 = [
        x1[0] + 0.1 * 0.01 / (sqrt(0.2501) + 0.001),
        x1[1] + 0.1 * 1.0 / (sqrt(2.0) + 0.001),
        x1[2] + 0.1 * 2.0 / (2.0 + 0.001),
    ]
    return x1, x2


HAND_CASES = [
    ("fedavg", {"server_lr": 0.5}, _fedavg),
    ("fedavgm", {"server_lr": 0.5, "server_momentum": 0.9}, _fedavgm),
    ("fedadam", {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}, _fedadam),
    ("fedyogi", {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}, _fedyogi),
    ("fedadagrad", {"eta": 0.1, "tau": 1e-3}, _fedadagrad),
]


@pytest.mark.parametrize("name, hyper, expected", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_two_steps_match_hand_arithmetic(name: str, hyper: dict[str, float], expected) -> None:  # type: ignore[no-untyped-def]
    x1, x2 = _two_steps(build_server_optimizer(name, **hyper))
    want1, want2 = expected()
    assert x1 == pytest.approx(want1, rel=1e-6, abs=1e-7)
    assert x2 == pytest.approx(want2, rel=1e-6, abs=1e-7)


def test_fedavgm_defaults_to_plain_fedavg() -> None:
    """Flower's FedAvgM defaults (η = 1, β = 0) add Δ and nothing else."""
    x1, x2 = _two_steps(FedAvgM())
    assert x1 == pytest.approx([1.5, 1.0, 3.0])
    assert x2 == pytest.approx([1.51, 2.0, 5.0])


# ---------------------------------------------------------------- defaults

DEFAULTS = [
    (FedAvgM, flwr_strategy.FedAvgM, {"server_lr": "server_learning_rate"}),
    (FedAdam, flwr_strategy.FedAdam, {}),
    (FedYogi, flwr_strategy.FedYogi, {}),
    (FedAdagrad, flwr_strategy.FedAdagrad, {}),
]


@pytest.mark.parametrize("ours, theirs, renamed", DEFAULTS, ids=[d[0].name for d in DEFAULTS])
def test_defaults_are_flowers(ours: Any, theirs: Any, renamed: dict[str, str]) -> None:
    flower = inspect.signature(theirs.__init__).parameters
    mine = ours()
    for key in hyper_parameters(ours.name):
        assert getattr(mine, key) == flower[renamed.get(key, key)].default, key


def test_fedavg_default_is_plain_fedavg() -> None:
    assert FedAvgOpt().server_lr == 1.0


# ------------------------------------------------------------------ oracle

SHAPES = [(4, 3), (5,)]
ORACLE_CASES = [
    (
        "fedavg",
        {},
        lambda init: flwr_strategy.FedAvg(initial_parameters=init),
    ),
    (
        "fedavgm",
        {"server_lr": 0.7, "server_momentum": 0.9},
        lambda init: flwr_strategy.FedAvgM(
            initial_parameters=init, server_learning_rate=0.7, server_momentum=0.9
        ),
    ),
    ("fedadam", {}, lambda init: flwr_strategy.FedAdam(initial_parameters=init)),
    (
        "fedadam",
        {"eta": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3},
        lambda init: flwr_strategy.FedAdam(
            initial_parameters=init, eta=0.05, beta_1=0.8, beta_2=0.95, tau=1e-3
        ),
    ),
    ("fedyogi", {}, lambda init: flwr_strategy.FedYogi(initial_parameters=init)),
    (
        "fedyogi",
        {"eta": 0.03, "beta_1": 0.5, "beta_2": 0.9, "tau": 1e-2},
        lambda init: flwr_strategy.FedYogi(
            initial_parameters=init, eta=0.03, beta_1=0.5, beta_2=0.9, tau=1e-2
        ),
    ),
    ("fedadagrad", {}, lambda init: flwr_strategy.FedAdagrad(initial_parameters=init)),
    (
        "fedadagrad",
        {"eta": 0.2, "tau": 1e-2},
        lambda init: flwr_strategy.FedAdagrad(initial_parameters=init, eta=0.2, tau=1e-2),
    ),
]


@pytest.mark.parametrize(
    "name, hyper, flower_factory",
    ORACLE_CASES,
    ids=[f"{c[0]}-{'custom' if c[1] else 'default'}" for c in ORACLE_CASES],
)
def test_matches_flower_legacy_strategy(name: str, hyper: dict[str, float], flower_factory) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    flower = flower_factory(ndarrays_to_parameters(initial))
    ours = build_server_optimizer(name, **hyper)
    flower_global, our_global = list(initial), list(initial)
    for rnd in (1, 2, 3):
        deltas = [[(0.1 * rng.normal(size=s)).astype(np.float32) for s in SHAPES] for _ in range(3)]
        sizes = [int(n) for n in rng.integers(1, 100, size=3)]
        results = [
            (
                None,
                FitRes(
                    Status(Code.OK, ""),
                    ndarrays_to_parameters([g + d for g, d in zip(flower_global, delta)]),
                    n,
                    {},
                ),
            )
            for delta, n in zip(deltas, sizes)
        ]
        params, _ = flower.aggregate_fit(rnd, results, [])
        flower_global = parameters_to_ndarrays(params)
        our_global = ours.step(our_global, weighted_mean(deltas, [float(n) for n in sizes]))
        for mine, theirs in zip(our_global, flower_global):
            assert mine.dtype == np.float32
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-6, err_msg=f"round {rnd}")
        # The optimiser must actually move: a no-op would pass FedAvg-style checks.
        assert not np.allclose(our_global[0], initial[0])


# ------------------------------------------------------------ checkpoints

STATE_CASES = [
    ("fedavg", {"server_lr": 0.5}),
    ("fedavgm", {"server_momentum": 0.9}),
    ("fedadam", {}),
    ("fedyogi", {}),
    ("fedadagrad", {}),
]


def _rounds(n: int) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    rng = np.random.default_rng(7)
    return [
        (
            [rng.normal(size=s).astype(np.float32) for s in SHAPES],
            [(0.1 * rng.normal(size=s)).astype(np.float32) for s in SHAPES],
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("name, hyper", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_state_dict_round_trips_exactly(name: str, hyper: dict[str, float]) -> None:
    rounds = _rounds(3)
    trained = build_server_optimizer(name, **hyper)
    for g, d in rounds[:2]:
        trained.step(g, d)
    state = json.loads(json.dumps(trained.state_dict()))  # as a JSON checkpoint would
    resumed = build_server_optimizer(name, **hyper)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == trained.state_dict()
    g, d = rounds[2]
    for a, b in zip(trained.step(g, d), resumed.step(g, d)):
        assert np.array_equal(a, b)
    assert resumed.state_dict() == trained.state_dict()


def test_fresh_state_round_trips() -> None:
    fresh = FedAdam()
    loaded = FedAdam()
    loaded.load_state_dict(json.loads(json.dumps(fresh.state_dict())))
    assert loaded.m is None and loaded.v is None and loaded.t == 0


def test_loading_another_optimisers_state_is_a_config_error() -> None:
    yogi = FedYogi()
    yogi.step(*_rounds(1)[0])
    with pytest.raises(ConfigError) as err:
        FedAdam().load_state_dict(yogi.state_dict())
    assert "'fedyogi'" in str(err.value) and "'fedadam'" in str(err.value)


# ---------------------------------------------------------- errors, inputs


def test_unknown_name_names_the_key_and_lists_choices() -> None:
    with pytest.raises(ConfigError) as err:
        build_server_optimizer("adam")
    (problem,) = err.value.problems
    assert problem.startswith("federation.server-optimizer: unknown 'adam'")
    for key in ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"):
        assert f"'{key}'" in problem
    assert set(SERVER_OPTIMIZERS) == {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"}


def test_unknown_hyper_parameter_lists_accepted_ones() -> None:
    with pytest.raises(ConfigError) as err:
        build_server_optimizer("fedadagrad", beta_1=0.9)
    assert "beta_1" in str(err.value) and "'eta'" in str(err.value)


def test_out_of_range_hyper_parameters_all_reported() -> None:
    with pytest.raises(ConfigError) as err:
        build_server_optimizer("fedadam", eta=0.0, beta_2=1.0, tau=0.0)
    assert len(err.value.problems) == 3


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_inputs_not_mutated_and_output_is_float32(name: str) -> None:
    opt = build_server_optimizer(name)
    assert isinstance(opt, ServerOptimizer)
    for g, d in _rounds(2):
        d64 = [a.astype(np.float64) for a in d]  # callers may hand over float64 means
        g_copy, d_copy = [a.copy() for a in g], [a.copy() for a in d64]
        new = opt.step(g, d64)
        for before, after in zip(g_copy + d_copy, g + d64):
            assert np.array_equal(before, after)
        for out, src in zip(new, g):
            assert out.dtype == np.float32 and out is not src and not np.shares_memory(out, src)


def test_mismatched_shapes_fail_loudly() -> None:
    with pytest.raises(ValueError, match="shape"):
        FedAvgOpt().step([np.zeros(3, np.float32)], [np.zeros(4, np.float32)])
    with pytest.raises(ValueError, match="arrays"):
        FedAvgOpt().step([np.zeros(3, np.float32)], [])

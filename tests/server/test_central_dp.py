"""Central (user-level) DP: Flower's wrapper around delta FedAvg, and its ε."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from opacus.accountants import RDPAccountant

from common.adapters import AdapterSpec, global_norm
from common.config import load_config
from server.central_dp import central_epsilon, wrap
from server.strategy.fedavg import DeltaFedAvg

SPEC = AdapterSpec(names=("w",), shapes=((50_000,),))


def _config(sigma: float, clip: float = 0.5):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            "central-dp.enabled=true",
            f"central-dp.noise-multiplier={sigma}",
            f"central-dp.clipping-norm={clip}",
            "federation.num-clients=10",
            "federation.clients-per-round=4",
        ],
    )


def _round(sigma: float):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    initial = [np.zeros(SPEC.shapes[0], np.float32)]
    deltas = [[rng.normal(size=SPEC.shapes[0]).astype(np.float32) * 1e-3] for _ in range(4)]
    config = _config(sigma)
    inner = DeltaFedAvg(
        spec=SPEC, initial=initial, clients_per_round=4, min_clients=2, fixed_weight=True
    )
    strategy = wrap(inner, config)
    inner.global_arrays = initial
    results = [
        (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(d), n, {}))
        for d, n in zip(deltas, [10, 20, 30, 40], strict=True)
    ]
    np.random.seed(1)
    params, _ = strategy.aggregate_fit(1, results, [])
    expected = np.mean([d[0] for d in deltas], axis=0)
    return parameters_to_ndarrays(params)[0], expected


def test_without_noise_the_aggregate_is_the_equal_weight_mean() -> None:
    """σ = 0: the wrapper changes nothing; weights are equal whatever num_examples say."""
    got, expected = _round(0.0)
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_noise_std_is_sigma_c_over_n() -> None:
    """The aggregate's noise has std σ·C/n (n = sampled clients)."""
    got, expected = _round(2.0)
    std = float(np.std(got - expected))
    assert std == pytest.approx(2.0 * 0.5 / 4, rel=0.02)


def test_wrap_is_identity_when_off() -> None:
    """No central DP: the strategy is returned unchanged."""
    inner = object()
    assert wrap(inner, load_config(None, [])) is inner


def test_central_epsilon_matches_opacus_sampled_gaussian() -> None:
    """User-level ε = RDP of `rounds` sampled Gaussians, q = clients-per-round/num-clients."""
    config = _config(1.2)
    accountant = RDPAccountant()
    for _ in range(5):
        accountant.step(noise_multiplier=1.2, sample_rate=0.4)
    assert central_epsilon(config, 5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert central_epsilon(config, 0) == 0.0


def test_client_clips_its_whole_delta(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    """A client asked to clip sends a delta of norm ≤ C."""
    from client.node import fit
    from client.runtime import get_client_data, get_runtime
    from common.adapters import get_adapter_arrays

    config = load_config(
        None,
        [
            f"model.path='{tiny_bert}'",
            "privacy.enabled=false",
            "training.optimizer='adam'",
            "training.lr=0.05",
            "training.local-steps=3",
            "data.demo-examples=200",
        ],
    )
    runtime = get_runtime(config)
    data = get_client_data(config, runtime, partition_id=0)
    start = get_adapter_arrays(runtime.model)
    free = fit(config, runtime, data, start, server_round=1, ledger=None)
    clipped = fit(config, runtime, data, start, server_round=1, ledger=None, clip_update_to=0.01)
    assert global_norm(free.delta) > 0.01
    assert global_norm(clipped.delta) == pytest.approx(0.01, rel=1e-4)

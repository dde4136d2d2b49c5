"""Central (user-level) DP: Poisson-sampled clients, a fixed-denominator noisy mean, its ε.

Oracles: numpy sums for the mean, the noise's measured std for σC/m, and an accountant
written from the definitions for ε (tests/support/rdp_oracle.py). The attacks the fixed
denominator and the secret noise close are in tests/attacks/test_central_dp.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from common.adapters import global_norm
from common.config import load_config
from common.errors import ConfigError
from server.central_dp import central_epsilon
from server.strategy.server_opt import build_server_optimizer
from tests.support import rdp_oracle
from tests.support.central_dp import CLIP, SPEC, release, strategy, update


def test_without_noise_the_release_is_the_clipped_sum_over_the_fixed_denominator() -> None:
    """σ = 0: (Σ clip(Δᵢ, C)) / m with numpy; a refused update counts as zero."""
    rng = np.random.default_rng(0)
    small, large = update(rng, 0.2), update(rng, 3.0)  # the second is clipped to C
    got = release(strategy(0.0), [small, large, None])
    clipped = large[0].astype(np.float64) * CLIP / np.linalg.norm(large[0].astype(np.float64))
    np.testing.assert_allclose(got, (small[0] + clipped) / 4, atol=1e-7)


def test_noise_std_is_sigma_c_over_m_and_secret() -> None:
    rng = np.random.default_rng(1)
    deltas = [update(rng, 0.3) for _ in range(4)]
    plain = release(strategy(0.0), deltas)
    first, second = release(strategy(2.0), deltas), release(strategy(2.0), deltas)
    assert float(np.std(first - plain)) == pytest.approx(2.0 * CLIP / 4, rel=0.02)
    # Two servers with the same inputs (and the same everything else) draw other noise.
    assert float(np.std(first - second)) == pytest.approx(2.0 * CLIP / 4 * 2**0.5, rel=0.02)


def test_a_round_with_no_update_still_releases_noise_and_is_not_failed() -> None:
    central = strategy(1.0)
    got = release(central, [])
    assert float(np.std(got)) == pytest.approx(CLIP / 4, rel=0.02)
    assert central.records[1]["failed"] is False and central.records[1]["num_clients"] == 0


def test_clients_are_poisson_sampled_over_the_real_population() -> None:
    """q = m / N with N the connected nodes (here 20, though no config says so)."""
    from flwr.server.client_proxy import ClientProxy

    class _Proxy(ClientProxy):  # only what sampling touches
        def get_properties(self, *a, **k): ...  # type: ignore[no-untyped-def]
        def get_parameters(self, *a, **k): ...  # type: ignore[no-untyped-def]
        def fit(self, *a, **k): ...  # type: ignore[no-untyped-def]
        def evaluate(self, *a, **k): ...  # type: ignore[no-untyped-def]
        def reconnect(self, *a, **k): ...  # type: ignore[no-untyped-def]

    manager = SimpleClientManager()
    for i in range(20):
        manager.register(_Proxy(str(i)))
    central = strategy(1.0)
    initial = ndarrays_to_parameters([np.zeros(SPEC.shapes[0], np.float32)])
    counts = []
    for rnd in range(1, 401):
        instructions = central.configure_fit(rnd, initial, manager)
        counts.append(len(instructions))
        assert central.records[rnd]["central_dp_sample_rate"] == pytest.approx(4 / 20)
        assert central.records[rnd]["population"] == 20
    assert all(ins.config[KEY_CLIPPING_NORM] == CLIP for _, ins in instructions)
    assert np.mean(counts) == pytest.approx(4, rel=0.1)  # Binomial(20, 0.2)
    assert np.var(counts) == pytest.approx(20 * 0.2 * 0.8, rel=0.3)
    assert min(counts) < 4 < max(counts)  # not a fixed-size sample


def test_central_epsilon_matches_an_accountant_written_from_the_definitions() -> None:
    """One (σ, q, 1) entry per released round; q may change as nodes join or leave."""
    entries = [(1.2, 0.4, 1), (1.2, 0.4, 1), (1.2, 0.25, 1)]
    from common.privacy.ledger import _orders

    expected = rdp_oracle.epsilon(entries, 1e-5, _orders())
    assert central_epsilon(entries, 1e-5) == pytest.approx(expected, rel=1e-6)
    assert central_epsilon([], 1e-5) == 0.0


def test_the_noise_comes_before_the_server_optimiser() -> None:
    """FedAdam then only post-processes the noisy mean, so it is allowed."""
    config = load_config(None, ["central-dp.enabled=true", "server-optimizer.name='fedadam'"])
    assert config.central_dp.enabled
    rng = np.random.default_rng(3)
    deltas = [update(rng, 0.3) for _ in range(4)]
    plain = release(strategy(0.0), deltas)
    adam = build_server_optimizer("fedadam", eta=0.1, tau=1e-3)
    got = release(strategy(0.0, server_optimizer=adam), deltas)
    reference = build_server_optimizer("fedadam", eta=0.1, tau=1e-3)
    expected = reference.step([np.zeros(SPEC.shapes[0], np.float32)], [plain.astype(np.float32)])
    np.testing.assert_allclose(got, expected[0], atol=1e-6)


def test_central_dp_is_not_combined_with_secure_aggregation() -> None:
    with pytest.raises(ConfigError, match="central-dp and secure-aggregation cannot be combined"):
        load_config(None, ["central-dp.enabled=true", "secure-aggregation.enabled=true"])


def test_client_clips_its_whole_delta(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    """A client asked to clip sends a delta of norm ≤ C."""
    from client.local_round import fit
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

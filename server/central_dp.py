"""Central (user-level) DP on the aggregate, through Flower's strategy wrapper.

Clients clip their whole delta to ``central-dp.clipping-norm`` (client/node.py reads the
norm the wrapper puts in the fit config); Flower's
``DifferentialPrivacyClientSideFixedClipping`` adds N(0, (σ·C/n)²) to the aggregate of
the n sampled clients and voids a round in which any sampled client failed, since the
noise is calibrated for n. Its ε is accounted here, per round, as a sampled Gaussian
mechanism with q = clients-per-round / num-clients (Flower samples without replacement;
the Poisson-subsampling RDP bound is the usual approximation and is stated as such).
"""

from __future__ import annotations

from typing import Any

from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping

from common.config import RunConfig
from common.privacy.ledger import compute_epsilon


def wrap(strategy: Any, config: RunConfig) -> Any:
    """The strategy with central DP around it, or unchanged when it is off."""
    central = config.central_dp
    if not central.enabled:
        return strategy
    return DifferentialPrivacyClientSideFixedClipping(
        strategy,
        noise_multiplier=central.noise_multiplier,
        clipping_norm=central.clipping_norm,
        num_sampled_clients=config.federation.clients_per_round,
    )


def central_epsilon(config: RunConfig, rounds: int) -> float:
    """User-level ε after ``rounds`` noisy aggregations."""
    fed = config.federation
    q = fed.clients_per_round / fed.num_clients
    history = [(config.central_dp.noise_multiplier, q, rounds)]
    return compute_epsilon(history, config.privacy.delta)

"""Central (user-level) DP on the aggregate: DP-FedAvg with a fixed denominator.

The mechanism of McMahan et al. 2018 ("Learning differentially private recurrent
language models"), with every choice that its accounting relies on made here, on the
server, where the accounting is:

- **Poisson sampling of clients.** Each connected node joins a round independently with
  probability q = clients-per-round / N, N the nodes connected at that round (the real
  population in a deployment, not a config value). The subsampled-Gaussian RDP bound
  (Opacus's, the same the clients' ledgers use) holds for exactly this sampling.
- **A fixed denominator.** The released mean delta is (Σ clip(Δᵢ, C) + N(0, (σC)²)) / m,
  m = clients-per-round, over whatever arrived: a refused, failed or rejected update
  counts as zero, so one client's presence moves the sum by at most C and the noise is
  never sized for more updates than are in it. Rounds are never voided (voiding on a
  count would itself depend on who took part), and a round with no one sampled releases
  noise alone.
- **Clipping on both sides.** Clients clip their whole delta to C (the fit config tells
  them, as Flower's wrapper does); the server clips again, so the bound does not depend
  on client code.
- **Secret randomness.** The sampling and the noise come from a generator seeded from
  OS entropy in this process, never stored in a checkpoint: whoever reads the run
  folder (or knows training.seed) cannot recompute the noise.

The noise is added to the mean delta before the server optimiser uses it, so any
server optimiser (FedAvgM, FedAdam, ...) is post-processing. Central DP trusts the
server: it sees every un-noised update. It protects organisations from whoever sees
the global adapters, not from the coordinator (SECURITY.md); DP-SGD on the clients is
what protects against the coordinator.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from common.config import RunConfig
from common.privacy.ledger import Entry, compute_epsilon

T = TypeVar("T")


def secret_generator() -> np.random.Generator:
    """A numpy generator seeded with 128 bits of OS entropy, for this process only."""
    return np.random.default_rng(secrets.randbits(128))


@dataclass
class CentralDP:
    """The server's half of central DP for one run (see the module doc)."""

    noise_multiplier: float
    clipping_norm: float
    expected_clients: int  # m: the fixed denominator, and q·N
    rng: np.random.Generator = field(default_factory=secret_generator, repr=False)

    @classmethod
    def from_config(cls, config: RunConfig) -> CentralDP | None:
        central = config.central_dp
        if not central.enabled:
            return None
        return cls(
            noise_multiplier=central.noise_multiplier,
            clipping_norm=central.clipping_norm,
            expected_clients=config.federation.clients_per_round,
        )

    def fit_config(self) -> dict[str, float]:
        """What every fit instruction tells clients: clip your whole delta to C."""
        return {KEY_CLIPPING_NORM: self.clipping_norm}

    def sample(self, clients: Sequence[T]) -> tuple[list[T], float]:
        """Each client independently with q = m / N (capped at 1); returns (chosen, q)."""
        if not clients:
            return [], 1.0
        q = min(1.0, self.expected_clients / len(clients))
        draws = self.rng.random(len(clients))
        return [c for c, u in zip(clients, draws, strict=True) if u < q], q

    def noisy_mean(
        self, updates: Sequence[Sequence[np.ndarray]], shapes: Sequence[tuple[int, ...]]
    ) -> list[np.ndarray]:
        """(Σ clip(Δᵢ, C) + N(0, (σC)²)) / m, array by array (float64, then float32)."""
        total = [np.zeros(shape, dtype=np.float64) for shape in shapes]
        for update in updates:
            arrays = [np.asarray(a, dtype=np.float64) for a in update]
            norm = float(np.sqrt(sum(float(np.sum(a * a)) for a in arrays)))
            scale = min(1.0, self.clipping_norm / norm) if norm > 0 else 1.0
            for acc, array in zip(total, arrays, strict=True):
                acc += scale * array
        std = self.noise_multiplier * self.clipping_norm
        return [
            ((acc + self.rng.normal(0.0, std, acc.shape)) / self.expected_clients).astype(
                np.float32
            )
            for acc in total
        ]


def central_epsilon(entries: Sequence[Entry], delta: float) -> float:
    """User-level ε of the noisy rounds so far: one (σ, q, 1) entry per round, q as sampled."""
    return compute_epsilon(list(entries), delta)

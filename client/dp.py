"""Opacus wiring for DP-SGD on a PEFT model.

``make_private`` is called with ``wrap_model=False``: Opacus attaches its per-sample
gradient hooks to the PEFT model itself instead of wrapping it, so the model object the
process caches and reuses across rounds and virtual clients never changes type, and the
hooks are removed after every round (see :func:`private_training`).

The noise and the Poisson sampling masks are drawn from a generator seeded from the
operating system's entropy (``secrets``), made afresh for every round and never stored
or sent: the party the noise protects against (the coordinator, who chooses every seed
in the run config) cannot predict it, so it cannot subtract it from a released update.
Only ``DPSettings.noise_seed`` (the ``privacy.reproducible-noise`` research switch,
which a deployed node refuses unless its own policy allows it) makes it deterministic.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from client.per_sample import opacus_ready
from common.errors import PrivatuneError
from common.privacy.ledger import Entry


@dataclass(frozen=True, kw_only=True)
class DPSettings:
    """What one client's DP-SGD round uses.

    ``noise_seed`` None (always, outside research runs) draws the noise and the Poisson
    masks from OS entropy; an int makes them reproducible, and so not private against
    whoever knows it.
    """

    noise_multiplier: float
    max_grad_norm: float
    grad_sample_mode: str = "hooks"
    noise_seed: int | None = None


def noise_generator(settings: DPSettings) -> torch.Generator:
    """The round's source of DP randomness: secret unless ``settings.noise_seed`` is set."""
    seed = secrets.randbits(64) if settings.noise_seed is None else settings.noise_seed
    return torch.Generator().manual_seed(seed)


@dataclass
class PrivateTraining:
    """The private optimizer and Poisson loader for one round, and what ran."""

    optimizer: Any
    loader: DataLoader
    engine: Any
    sample_rate: float

    def entries(self) -> list[Entry]:
        """(σ, q, steps) as Opacus's own accountant recorded them: what actually ran."""
        return [(float(s), float(q), int(n)) for s, q, n in self.engine.accountant.history]


@contextmanager
def private_training(
    model: Any,
    optimizer: torch.optim.Optimizer,
    dataset: TensorDataset,
    *,
    batch_size: int,
    settings: DPSettings,
) -> Iterator[PrivateTraining]:
    """Attach Opacus to ``model`` for one round; detach its hooks however the round ends."""
    with (
        opacus_ready(model),
        _private_training(
            model, optimizer, dataset, batch_size=batch_size, settings=settings
        ) as private,
    ):
        yield private


@contextmanager
def _private_training(
    model: Any,
    optimizer: torch.optim.Optimizer,
    dataset: TensorDataset,
    *,
    batch_size: int,
    settings: DPSettings,
) -> Iterator[PrivateTraining]:
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp")
    # Opacus's Poisson sampler draws from the loader's generator, its noise from
    # noise_generator; without them both would come from torch's global generator.
    generator = noise_generator(settings)
    batches = DataLoader(dataset, batch_size=batch_size, generator=generator)
    hooks, dp_optimizer, loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=batches,
        noise_generator=generator,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=settings.grad_sample_mode,
        wrap_model=False,
        loss_reduction="mean",
    )
    # Opacus sets int(len(dataset) * sample_rate), which float error can round down
    # (49 * (1/49) = 0.999...: an expected batch of 0, gradients divided by zero); the
    # same quantity in exact integer arithmetic:
    dp_optimizer.expected_batch_size = len(dataset) // len(batches)
    try:
        yield PrivateTraining(
            optimizer=dp_optimizer,
            loader=loader,
            engine=engine,
            sample_rate=float(loader.sample_rate),
        )
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        hooks.cleanup()
        for param in model.parameters():
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(param, attr):
                    delattr(param, attr)


def noise_only_step(optimizer: Any) -> None:
    """An empty Poisson batch: no example contributes, but the step (and its noise) runs.

    Hugging Face models crash on a 0-row batch, so instead of a forward pass every
    parameter gets an empty per-sample gradient; Opacus then adds the calibrated noise
    to a zero sum, exactly what DP-SGD prescribes for an empty batch.
    """
    for param in optimizer.params:
        param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype)
    optimizer.step()


def check_grad_samples(model: Any) -> None:
    """Every trainable parameter must have a per-sample gradient after backward."""
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and getattr(p, "grad_sample", None) is None
    ]
    if missing:
        raise PrivatuneError(
            "DP preflight: Opacus computed no per-sample gradient for "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; this PEFT "
            "method or layer type is not supported by Opacus hooks, turn privacy off or "
            "choose another adapter"
        )

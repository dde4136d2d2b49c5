"""The local training loop: one loop for plain and private (DP-SGD) training.

A round is a fixed number of optimizer steps, so that the privacy cost of a round is
known before it starts (the client can refuse a round that would exceed its budget).
With DP, batches are Poisson-sampled by Opacus; without, they are shuffled mini-batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from client.dp import DPSettings, check_grad_samples, noise_only_step, private_training
from common.config import TrainingConfig
from common.data.encode import trim_batch
from common.losses import per_example_losses
from common.privacy.ledger import Entry


@dataclass
class TrainResult:
    """What a round of local training did."""

    loss: float
    steps: int
    empty_batches: int
    examples_seen: int
    privacy_entries: list[Entry] = field(default_factory=list)


def make_optimizer(params: list[torch.nn.Parameter], config: TrainingConfig) -> Any:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)


@torch.no_grad()
def proximal_step(
    params: list[torch.nn.Parameter], anchor: list[torch.Tensor], *, lr: float, mu: float
) -> None:
    """FedProx's proximal term as its own gradient step: w -= lr·mu·(w - w_global).

    Taken after the (private) data step, it depends only on the global adapter, so it is
    post-processing under DP and needs no per-sample gradients.
    """
    for param, start in zip(params, anchor, strict=True):
        param.sub_(lr * mu * (param - start))


def _endless(loader: DataLoader) -> Iterator[list[torch.Tensor]]:
    while True:
        yield from loader


def train_adapter(
    model: Any,
    dataset: TensorDataset,
    *,
    task: str,
    config: TrainingConfig,
    dp: DPSettings | None,
    seed: int,
    steps: int | None = None,
    check_per_sample: bool = False,
) -> TrainResult:
    """Run ``steps`` (default ``config.local_steps``) optimizer steps on the adapter."""
    steps = config.local_steps if steps is None else steps
    torch.manual_seed(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if config.proximal_mu > 0 else None
    optimizer = make_optimizer(params, config)
    if dp is None:
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=True, generator=generator
        )
        context: Any = nullcontext(None)
    else:
        context = private_training(
            model, optimizer, dataset, batch_size=config.batch_size, settings=dp
        )
    losses: list[float] = []
    empty = seen = 0
    with context as private:
        if private is not None:
            optimizer, loader = private.optimizer, private.loader
        batches = _endless(loader)
        for _ in range(steps):
            batch = trim_batch(next(batches))
            optimizer.zero_grad(set_to_none=True)
            if batch[0].shape[0] == 0:
                empty += 1
                noise_only_step(optimizer)
            else:
                loss = per_example_losses(model, batch, task).mean()
                loss.backward()
                if check_per_sample and private is not None:
                    check_grad_samples(model)
                optimizer.step()
                losses.append(float(loss.detach()))
                seen += int(batch[0].shape[0])
            if anchor is not None:
                proximal_step(params, anchor, lr=config.lr, mu=config.proximal_mu)
        entries = private.entries() if private is not None else []
    mean_loss = float(sum(losses) / len(losses)) if losses else math.nan
    return TrainResult(mean_loss, steps, empty, seen, entries)

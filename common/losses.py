"""Per-example losses, so that one example is the unit of privacy for every task.

The Hugging Face models' own causal-LM loss averages over every token in the batch,
which ties each sequence's weight to the others' lengths; here each sequence's loss is
the mean over its own response tokens, and the batch loss is the mean over sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from common.data.encode import IGNORE_INDEX


def forward_logits(model: Any, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """The model's logits for the batch's own positions.

    Prompt tuning prepends virtual tokens to a causal LM's input, so its logits are
    longer than the batch; those leading positions have no labels and are dropped.
    """
    input_ids, attention, _ = batch
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    if logits.dim() == 3 and logits.shape[1] > input_ids.shape[1]:
        logits = logits[:, -input_ids.shape[1] :]
    return logits


def classification_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def causal_lm_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = (shift_labels != IGNORE_INDEX).to(token_loss.dtype)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sequence-classification": classification_losses,
    "causal-lm": causal_lm_losses,
}


def per_example_losses(model: Any, batch: Sequence[torch.Tensor], task: str) -> torch.Tensor:
    return LOSSES[task](forward_logits(model, batch), batch[2])

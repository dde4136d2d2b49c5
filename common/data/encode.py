"""Tokenise validated examples into fixed-width tensors.

Rows are padded to ``max_length`` once, here, so that every batch (including an empty
Poisson batch) has a known shape; the training loop trims each batch to its longest
row, so padding costs memory, not compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from common.data.formats import ClassificationExample, InstructionExample, check_lengths

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """Tensors ready for training plus how many rows were too long."""

    dataset: TensorDataset
    num_too_long: int

    def __len__(self) -> int:
        return len(self.dataset)


def encode_classification(
    examples: Sequence[ClassificationExample],
    tokenizer: Any,
    label_ids: Mapping[str, int],
    *,
    max_length: int,
    too_long: str,
    source: str,
    locations: Sequence[str] | None = None,
) -> Encoded:
    """input_ids, attention_mask (N, max_length) and labels (N,).

    ``locations`` (one ``file:line`` per example) lets errors name the offending row.
    """
    unknown = sorted({e.label for e in examples} - set(label_ids))
    if unknown:
        from common.errors import DataError

        first = next(i for i, e in enumerate(examples) if e.label in unknown)
        where = f" (first at {locations[first]})" if locations is not None else ""
        raise DataError(
            f"labels {unknown}{where} are not in the run's label set {sorted(label_ids)}; "
            "add them to data.labels or fix the rows",
            path=source,
        )
    texts = [e.text for e in examples]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    kept, num_long = check_lengths(
        lengths, max_length=max_length, policy=too_long, source=source, locations=locations
    )
    batch = tokenizer(
        [texts[i] for i in kept],
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    labels = torch.tensor([label_ids[examples[i].label] for i in kept], dtype=torch.long)
    return Encoded(TensorDataset(batch["input_ids"], batch["attention_mask"], labels), num_long)


def encode_instructions(
    examples: Sequence[InstructionExample],
    tokenizer: Any,
    *,
    max_length: int,
    too_long: str,
    source: str,
    locations: Sequence[str] | None = None,
) -> Encoded:
    """Prompt + response + EOS; labels cover only the response (prompt and padding ignored).

    When a row is too long its prompt is cut from the left so the response survives.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
    responses = tokenizer([e.response for e in examples], add_special_tokens=False)["input_ids"]
    lengths = [len(p) + len(r) + len(eos) for p, r in zip(prompts, responses, strict=True)]
    kept, num_long = check_lengths(
        lengths, max_length=max_length, policy=too_long, source=source, locations=locations
    )
    n = len(kept)
    input_ids = torch.full((n, max_length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((n, max_length), dtype=torch.long)
    labels = torch.full((n, max_length), IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(kept):
        response = (responses[i] + eos)[:max_length]
        prompt = prompts[i][-(max_length - len(response)) :] if len(response) < max_length else []
        ids = prompt + response
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, len(prompt) : len(ids)] = torch.tensor(response)
    return Encoded(TensorDataset(input_ids, attention, labels), num_long)


def trim_batch(batch: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Cut the padding columns no row of this batch uses (rows are right-padded)."""
    input_ids, attention, labels = batch
    if input_ids.shape[0] == 0:
        return [input_ids, attention, labels]
    width = max(int(attention.sum(dim=1).max()), 1)
    if labels.dim() == 2:
        labels = labels[:, :width]
    return [input_ids[:, :width], attention[:, :width], labels]

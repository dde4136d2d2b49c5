"""Greedy answers to held-out instructions, scored against the reference answers.

Works on the encoded tensors evaluation already has (:mod:`common.data.encode`), so the
model is prompted with exactly the tokens it was trained on: the prompt is every token
before the first label position (the loss masks the prompt with ``IGNORE_INDEX``), the
reference is the labelled response without its end-of-sequence token.

Generation is bounded on purpose (``evaluation.generation-examples`` rows per evaluation,
``evaluation.max-new-tokens`` tokens each): it costs one forward pass per new token and
runs on every evaluation of every round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from common.data.encode import IGNORE_INDEX
from common.text_metrics import GenerationScores


@dataclass(frozen=True)
class GenerationSettings:
    """How many held-out rows to answer, how long the answers may be, in what batches."""

    examples: int
    max_new_tokens: int
    batch_size: int = 8


def prompts_and_references(
    dataset: TensorDataset, *, eos_token_id: int | None, limit: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt and reference token ids of the first ``limit`` rows that have both."""
    input_ids, attention, labels = dataset.tensors
    prompts: list[list[int]] = []
    references: list[list[int]] = []
    for row in range(len(dataset)):
        if len(prompts) >= limit:
            break
        length = int(attention[row].sum())
        answer = (labels[row, :length] != IGNORE_INDEX).nonzero()
        if answer.numel() == 0 or int(answer[0]) == 0:
            continue  # no response left after truncation, or no prompt to answer
        start = int(answer[0])
        reference = labels[row, start:length].tolist()
        if eos_token_id is not None and reference and reference[-1] == eos_token_id:
            reference = reference[:-1]
        prompts.append(input_ids[row, :start].tolist())
        references.append(reference)
    return prompts, references


def _left_padded(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only models continue from the last column: pad on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    return ids, mask


def _until_eos(tokens: list[int], eos_token_id: int | None) -> list[int]:
    if eos_token_id is not None and eos_token_id in tokens:
        return tokens[: tokens.index(eos_token_id)]
    return tokens


@torch.no_grad()
def greedy_answers(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    pad_token_id: int,
    eos_token_id: int | None,
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[list[int]]:
    """The new tokens greedy decoding produces for each prompt, cut at end-of-sequence."""
    was_training = model.training
    model.eval()
    answers: list[list[int]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids, mask = _left_padded(chunk, pad_token_id)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
            )
            for row in out[:, ids.shape[1] :].tolist():
                answers.append(_until_eos(row, eos_token_id))
    finally:
        model.train(was_training)
    return answers


def generation_scores(
    model: Any, tokenizer: Any, dataset: TensorDataset, settings: GenerationSettings
) -> GenerationScores:
    """Answer up to ``settings.examples`` held-out prompts greedily and score the answers."""
    if settings.examples <= 0 or len(dataset) == 0:
        return GenerationScores()
    eos = tokenizer.eos_token_id
    prompts, references = prompts_and_references(dataset, eos_token_id=eos, limit=settings.examples)
    if not prompts:
        return GenerationScores()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    answers = greedy_answers(
        model,
        prompts,
        pad_token_id=pad,
        eos_token_id=eos,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )
    decode = tokenizer.batch_decode
    return GenerationScores.of(
        [t.strip() for t in decode(answers, skip_special_tokens=True)],
        [t.strip() for t in decode(references, skip_special_tokens=True)],
    )

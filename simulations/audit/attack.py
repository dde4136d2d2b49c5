"""The attacker: holds the final global adapter (and the public base model) and scores canaries.

For every canary the attacker computes the loss of the planted secret and ranks the
secret among its candidates (all labels, or other pins). Members and non-members go
through exactly the same code, so the only difference between them is training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import RunConfig
from common.data.pipeline import encode, run_labels, to_examples
from common.data.readers import Record
from common.errors import PrivatuneError
from simulations.audit.canaries import Canary, pin_response
from simulations.audit.metrics import exposure, secret_rank

BATCH = 64


@dataclass(frozen=True)
class CanaryScores:
    """Per canary: the planted secret's loss, its rank and exposure among the candidates."""

    losses: list[float]
    ranks: list[float]
    exposures: list[float]
    num_candidates: int


def load_final_model(config: RunConfig, run_dir: Path) -> tuple[Any, Any]:
    """Base model + the run's final global adapter, exactly what the server publishes."""
    from peft import PeftModel

    from common.models import load_base_model, load_tokenizer

    labels = run_labels(config) if config.model.task == "sequence-classification" else None
    base = load_base_model(
        config.model.path,
        config.model.task,
        num_labels=len(labels) if labels else None,
        dropout=config.model.dropout,
        pooling=config.model.pooling,
    )
    model = PeftModel.from_pretrained(base, run_dir / "adapter")
    model.eval()
    return model, load_tokenizer(config.model.path)


def _losses_and_logits(model: Any, dataset: Any, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    import torch
    from torch.utils.data import DataLoader

    from common.data.encode import trim_batch
    from common.losses import LOSSES, forward_logits

    losses, logits_out = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=BATCH):
            batch = trim_batch(batch)
            logits = forward_logits(model, batch)
            losses.append(LOSSES[task](logits, batch[2]))
            if task == "sequence-classification":
                logits_out.append(logits)
    loss = torch.cat(losses).numpy().astype(np.float64)
    return loss, (torch.cat(logits_out).numpy() if logits_out else None)


def _encode_rows(config: RunConfig, tokenizer: Any, rows: list[dict]) -> Any:
    records = [Record(data=row, source="audit canaries", line=i + 1) for i, row in enumerate(rows)]
    examples = to_examples(config, records, tokenizer)
    encoded = encode(config, examples, tokenizer, source="audit canaries")
    if len(encoded) != len(rows):
        raise PrivatuneError(
            f"{len(rows) - len(encoded)} canaries are longer than model.max-length "
            f"({config.model.max_length}) and data.too-long drops them; raise model.max-length"
        )
    return encoded.dataset


def score_classification(
    model: Any, tokenizer: Any, config: RunConfig, canaries: Sequence[Canary]
) -> CanaryScores:
    """Loss of the planted label; its rank among all labels by the adapter's logits."""
    task = config.model.task
    rows = [c.row(task) for c in canaries]
    losses, logits = _losses_and_logits(model, _encode_rows(config, tokenizer, rows), task)
    assert logits is not None
    label_ids = {label: i for i, label in enumerate(run_labels(config))}
    ranks = []
    for canary, row in zip(canaries, logits, strict=True):
        # rank by negative logit, i.e. by the loss each label would have
        ranks.append(secret_rank(-row[label_ids[canary.secret]], -row))
    k = len(label_ids)
    return CanaryScores(
        losses=losses.tolist(),
        ranks=ranks,
        exposures=[exposure(r, k) for r in ranks],
        num_candidates=k,
    )


def score_causal_lm(
    model: Any, tokenizer: Any, config: RunConfig, canaries: Sequence[Canary]
) -> CanaryScores:
    """Loss of the true pin's response; its rank among every candidate pin's loss."""
    rows, spans = [], []
    for canary in canaries:
        start = len(rows)
        rows.extend(
            {"instruction": canary.text, "output": pin_response(pin)} for pin in canary.candidates
        )
        spans.append((start, len(rows)))
    losses, _ = _losses_and_logits(model, _encode_rows(config, tokenizer, rows), "causal-lm")
    true_losses, ranks = [], []
    for canary, (start, end) in zip(canaries, spans, strict=True):
        own = losses[start:end]
        true = own[canary.candidates.index(canary.secret)]
        true_losses.append(float(true))
        ranks.append(secret_rank(true, own))
    num = len(canaries[0].candidates) if canaries else 0
    return CanaryScores(
        losses=true_losses,
        ranks=ranks,
        exposures=[exposure(r, num) for r in ranks],
        num_candidates=num,
    )


SCORERS = {
    "sequence-classification": score_classification,
    "causal-lm": score_causal_lm,
}


def score(
    model: Any, tokenizer: Any, config: RunConfig, canaries: Sequence[Canary]
) -> CanaryScores:
    return SCORERS[config.model.task](model, tokenizer, config, canaries)

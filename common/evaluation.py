"""Evaluate an adapter on a held-out set: loss always; accuracy and macro-F1 for labels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.data.encode import trim_batch
from common.losses import LOSSES, forward_logits


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in truth or prediction."""
    scores = []
    for c in range(num_labels):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


@torch.no_grad()
def evaluate(model: Any, dataset: TensorDataset, task: str, *, batch_size: int = 64) -> dict:
    """Mean per-example loss, plus accuracy/macro-F1 (classification) or perplexity."""
    was_training = model.training
    model.eval()
    losses, preds, truth = [], [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size):
            batch = trim_batch(batch)
            logits = forward_logits(model, batch)
            losses.append(LOSSES[task](logits, batch[2]))
            if task == "sequence-classification":
                preds.append(logits.argmax(dim=-1))
                truth.append(batch[2])
    finally:
        model.train(was_training)
    loss = float(torch.cat(losses).mean()) if losses else float("nan")
    out: dict[str, float] = {"loss": loss, "num_examples": float(len(dataset))}
    if task == "sequence-classification" and preds:
        y_pred = torch.cat(preds).numpy()
        y_true = torch.cat(truth).numpy()
        num_labels = int(model.config.num_labels)
        out["accuracy"] = float(np.mean(y_pred == y_true))
        out["macro_f1"] = macro_f1(y_true, y_pred, num_labels)
    else:
        out["perplexity"] = math.exp(min(loss, 50.0))
    return out


def generation_settings(config: Any) -> Any:
    """The run's generation bounds, or None when generation metrics do not apply.

    They apply to causal LMs only (a classifier has no answers to generate) and are off
    with ``evaluation.generation-examples = 0``.
    """
    from common.generation import GenerationSettings

    ev = config.evaluation
    if config.model.task != "causal-lm" or ev.generation_examples == 0:
        return None
    return GenerationSettings(ev.generation_examples, ev.max_new_tokens, ev.batch_size)


def evaluate_run(
    model: Any, tokenizer: Any, dataset: TensorDataset, config: Any
) -> tuple[dict, Any]:
    """:func:`evaluate` plus, for causal LMs, greedy answers scored by ROUGE-L/BLEU/EM.

    Returns the metrics (means) and the generation statistics (``GenerationScores``, or
    None), which federated evaluation sends so the server can pool clients exactly.
    """
    from common.generation import generation_scores

    scores = evaluate(model, dataset, config.model.task)
    settings = generation_settings(config)
    if settings is None:
        return scores, None
    generated = generation_scores(model, tokenizer, dataset, settings)
    scores.update(generated.metrics())
    return scores, generated

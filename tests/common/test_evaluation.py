"""Held-out evaluation: macro-F1 against scikit-learn, and evaluate() against a manual pass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch.utils.data import TensorDataset

from common.adapters import build_adapter_model
from common.config import load_config
from common.evaluation import evaluate, macro_f1

NUM_LABELS = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("seed", range(8))
def test_macro_f1_matches_sklearn_on_present_classes(seed: int) -> None:
    """Random labels over 5 classes (some absent): equals sklearn's macro F1 on present ones."""
    rng = np.random.default_rng(seed)
    num_labels = 5
    n = int(rng.integers(1, 40))
    y_true = rng.choice([0, 1, 3], size=n)  # 2 and 4 never true
    y_pred = rng.choice([0, 1, 2], size=n)  # 3 and 4 never predicted; 4 absent everywhere
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    expected = f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0.0)
    assert macro_f1(y_true, y_pred, num_labels) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_edge_cases() -> None:
    """Perfect predictions score 1, fully wrong ones 0, and no examples score 0."""
    y = np.array([0, 1, 2, 2])
    assert macro_f1(y, y, 3) == 1.0
    assert macro_f1(y, (y + 1) % 3, 3) == 0.0
    assert macro_f1(np.array([], dtype=int), np.array([], dtype=int), 3) == 0.0


def _dataset(vocab: int, rows: int, width: int = 8) -> TensorDataset:
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(7, vocab, (rows, width), generator=generator)
    lengths = torch.randint(3, width + 1, (rows,), generator=generator)
    lengths[0] = width - 2  # no row uses the last two columns: evaluate trims them
    lengths[1:] = lengths[1:].clamp(max=width - 2)
    attention = (torch.arange(width)[None, :] < lengths[:, None]).long()
    input_ids = input_ids * attention
    labels = torch.randint(0, NUM_LABELS, (rows,), generator=generator)
    return TensorDataset(input_ids, attention, labels)


def test_evaluate_classification_matches_a_manual_pass(tiny_bert: Path) -> None:
    """Loss, accuracy and macro-F1 equal an untrimmed eval-mode pass; train mode is restored."""
    config = load_config(None, [f"model.path='{tiny_bert}'"])
    model = build_adapter_model(config, num_labels=NUM_LABELS)
    with torch.no_grad():  # a non-trivial adapter, so predictions differ between rows
        generator = torch.Generator().manual_seed(5)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator))
    data = _dataset(int(model.config.vocab_size), rows=10)
    input_ids, attention, labels = data.tensors

    assert model.training
    scores = evaluate(model, data, "sequence-classification", batch_size=4)
    assert model.training, "evaluate must restore train mode"

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention).logits
    model.train()
    preds = logits.argmax(dim=-1)
    manual_accuracy = int((preds == labels).sum()) / len(labels)
    manual_loss = float(F.cross_entropy(logits, labels))

    assert scores["num_examples"] == 10
    assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["macro_f1"] <= 1.0
    assert scores["accuracy"] == pytest.approx(manual_accuracy, abs=1e-12)
    assert scores["loss"] == pytest.approx(manual_loss, rel=1e-5)
    assert math.isfinite(scores["loss"]) and scores["loss"] > 0
    present = sorted(set(labels.tolist()) | set(preds.tolist()))
    assert scores["macro_f1"] == pytest.approx(
        f1_score(labels.numpy(), preds.numpy(), average="macro", labels=present), abs=1e-12
    )
    assert "perplexity" not in scores


def test_evaluate_causal_lm_reports_perplexity(tiny_llama: Path) -> None:
    """For a causal LM the loss is the mean per-sequence loss and perplexity is exp(loss)."""
    config = load_config(None, [f"model.path='{tiny_llama}'", "model.task='causal-lm'"])
    model = build_adapter_model(config)
    data = _dataset(int(model.config.vocab_size), rows=5)
    input_ids, attention, _ = data.tensors
    labels = torch.where(attention.bool(), input_ids, torch.full_like(input_ids, -100))
    data = TensorDataset(input_ids, attention, labels)

    scores = evaluate(model, data, "causal-lm", batch_size=2)

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention).logits
    per_sequence = []
    for row in range(5):
        n = int(attention[row].sum())
        per_sequence.append(float(F.cross_entropy(logits[row, : n - 1], input_ids[row, 1:n])))
    expected = sum(per_sequence) / len(per_sequence)
    assert scores["loss"] == pytest.approx(expected, rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert "accuracy" not in scores

"""Federated evaluation: clients' generation statistics pooled into corpus-level scores."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, Status

from common.adapters import AdapterSpec
from common.text_metrics import GenerationScores
from server.strategy.fedavg import DeltaFedAvg

SPEC = AdapterSpec(names=("w",), shapes=((2,),))
OK = Status(code=Code.OK, message="")


def _reply(loss: float, n: int, scores: GenerationScores | None) -> EvaluateRes:
    metrics = {"client_id": "x", "loss": loss}
    if scores is not None:
        metrics.update(scores.to_scalars())
        metrics.update(scores.metrics())
    return EvaluateRes(status=OK, loss=loss, num_examples=n, metrics=metrics)


def test_server_pools_statistics_not_scores() -> None:
    """The fed metrics equal the scores of both clients' answers as one corpus."""
    a = (
        ["the quick brown fox jumps over the dog", "billing"],
        ["the quick brown fox jumped over the lazy dog", "billing"],
    )
    b = (["order number 12345 is late"], ["my order number 12345 is late"])
    left, right = GenerationScores.of(*a), GenerationScores.of(*b)
    strategy = DeltaFedAvg(
        spec=SPEC, initial=[np.zeros(2, np.float32)], clients_per_round=2, min_clients=1
    )
    results = [
        (None, _reply(1.0, 10, left)),
        (None, _reply(3.0, 30, right)),
        (None, _reply(2.0, 5, None)),
    ]
    strategy.aggregate_evaluate(1, results, [])
    record = strategy.records[1]
    pooled = GenerationScores.of(a[0] + b[0], a[1] + b[1]).metrics()
    assert record["fed_eval_generated"] == 3
    assert record["fed_eval_rouge_l"] == pytest.approx(pooled["rouge_l"], abs=1e-12)
    assert record["fed_eval_bleu"] == pytest.approx(pooled["bleu"], abs=1e-12)
    assert record["fed_eval_exact_match"] == pytest.approx(1 / 3)
    assert record["fed_eval_loss"] == pytest.approx((10 * 1.0 + 30 * 3.0 + 5 * 2.0) / 45)


def test_no_generation_statistics_no_generation_metrics() -> None:
    strategy = DeltaFedAvg(
        spec=SPEC, initial=[np.zeros(2, np.float32)], clients_per_round=2, min_clients=1
    )
    strategy.aggregate_evaluate(1, [(None, _reply(1.0, 4, None))], [])
    assert not any(k.startswith("fed_eval_rouge") for k in strategy.records[1])

"""A client's round, as plain functions the Flower app calls.

``fit`` receives the global adapter, trains locally (privately when configured) and
returns only the adapter *delta* and named metrics; base weights and data never leave.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.supercore.differential_privacy import clip_inputs_inplace
from torch.utils.data import TensorDataset

from client.dp import DPSettings
from client.privacy import RoundPlan, plan_round
from client.runtime import Runtime
from client.train import train_adapter
from common.adapters import get_adapter_arrays, set_adapter_arrays, subtract
from common.config import RunConfig
from common.data.pipeline import ClientData
from common.errors import PrivatuneError
from common.evaluation import evaluate_run
from common.privacy.ledger import PrivacyLedger

log = logging.getLogger("privatune.client")

Metrics = dict[str, bool | bytes | float | int | str]


@dataclass
class FitReply:
    """What leaves the client: the delta, the example count, named metrics."""

    delta: list[np.ndarray]
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


def _seed(config: RunConfig, client_id: str, server_round: int) -> int:
    return (
        config.training.seed * 1_000_003 + zlib.crc32(client_id.encode()) % 1_000_003 + server_round
    ) % (2**31)


def preflight(config: RunConfig, runtime: Runtime, settings: DPSettings) -> None:
    """Before a client's first private round: per-sample grads exist and a step moves weights.

    Runs on random token ids, not on the client's data, so it spends no privacy.
    """
    if runtime.preflight_done:
        return
    model = runtime.model
    before = get_adapter_arrays(model)
    vocab = int(model.config.vocab_size)
    n, width = 4, min(8, config.model.max_length)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, vocab, (n, width), generator=generator)
    attention = torch.ones_like(input_ids)
    if config.model.task == "sequence-classification":
        labels = torch.randint(0, runtime.num_labels or 2, (n,), generator=generator)
    else:
        labels = input_ids.clone()
    probe = TensorDataset(input_ids, attention, labels)
    noiseless = DPSettings(0.0, settings.max_grad_norm, settings.grad_sample_mode)
    probe_config = config.training.model_copy(update={"batch_size": n})
    try:
        train_adapter(
            model,
            probe,
            task=config.model.task,
            config=probe_config,
            dp=noiseless,
            seed=0,
            steps=3,
            check_per_sample=True,
        )
        after = get_adapter_arrays(model)
        if all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
            raise PrivatuneError(
                "DP preflight: a private step did not change the adapter weights; "
                "check that the adapter parameters require gradients and the model was "
                "not moved to another device after Opacus attached"
            )
    finally:
        set_adapter_arrays(model, before)
    runtime.preflight_done = True


def fit(
    config: RunConfig,
    runtime: Runtime,
    data: ClientData,
    global_arrays: Sequence[np.ndarray],
    *,
    server_round: int,
    ledger: PrivacyLedger | None,
    clip_update_to: float | None = None,
    secagg_range: tuple[float, float] | None = None,
    run: str = "",
) -> FitReply:
    """One round of local training; refuses (zero delta, weight 0) if over budget.

    ``clip_update_to`` (central DP) clips the whole delta to that L2 norm before it leaves.
    ``secagg_range`` = (clipping range, max weight) of SecAgg+: the client counts the
    values SecAgg+ would clip, so clipping is reported instead of silent.
    """
    model = runtime.model
    set_adapter_arrays(model, global_arrays)
    metrics: Metrics = {"client_id": data.client_id, "num_too_long": data.train.num_too_long}
    plan: RoundPlan | None = None
    if ledger is not None:
        decided = plan_round(config, ledger, len(data.train), run=run)
        if not isinstance(decided, RoundPlan):
            ledger.stopped_for_budget = True
            reply = refuse(data, global_arrays, decided.reason)
            reply.metrics.update(privacy_metrics(ledger))
            return reply
        plan = decided
        preflight(config, runtime, plan.settings)
    result = train_adapter(
        model,
        data.train.dataset,
        task=config.model.task,
        config=config.training,
        dp=plan.settings if plan else None,
        seed=_seed(config, data.client_id, server_round),
    )
    if ledger is not None:
        for entry in result.privacy_entries:
            ledger.record(entry, run=run, server_round=server_round)
        metrics.update(privacy_metrics(ledger))
        assert plan is not None
        metrics.update(noise_multiplier=plan.entry[0], sample_rate=plan.entry[1])
    delta = subtract(get_adapter_arrays(model), global_arrays)
    if clip_update_to is not None:
        clip_inputs_inplace(delta, clip_update_to)
    weight = 1 if config.equal_weights else len(data.train)
    if secagg_range is not None:
        metrics["secagg_clipped_values"] = count_clipped(delta, weight, *secagg_range)
    metrics.update(
        train_loss=result.loss,
        steps=result.steps,
        empty_batches=result.empty_batches,
        refused=False,
    )
    return FitReply(delta, weight, metrics)


def count_clipped(
    delta: Sequence[np.ndarray], weight: float, clipping_range: float, max_weight: float
) -> int:
    """Values SecAgg+ would clip: it scales by weight/max_weight, then clips to ±range."""
    scale = weight / max_weight
    return int(sum(int(np.count_nonzero(np.abs(a) * scale > clipping_range)) for a in delta))


def refuse(data: ClientData, global_arrays: Sequence[np.ndarray], reason: str) -> FitReply:
    """A refusal: zero delta with weight 0, so it is neutral even inside SecAgg+'s sum."""
    log.warning("client %s refuses to train: %s", data.client_id, reason)
    zeros = [np.zeros_like(a, dtype=np.float32) for a in global_arrays]
    metrics: Metrics = {"client_id": data.client_id, "refused": True, "refusal": reason}
    return FitReply(zeros, 0, metrics)


def privacy_metrics(ledger: PrivacyLedger) -> Metrics:
    eps = ledger.epsilon
    return {
        "epsilon": float(eps),
        "dp_delta": float(ledger.delta),
        "privacy_history": ledger.to_json(),
    }


def evaluate_adapter(
    config: RunConfig, runtime: Runtime, data: ClientData, global_arrays: Sequence[np.ndarray]
) -> tuple[float, int, Metrics]:
    """Federated evaluation of the global adapter on this client's held-out split.

    For causal LMs the client also answers up to ``evaluation.generation-examples`` of its
    held-out prompts and sends the ROUGE-L/BLEU/exact-match statistics (sums and n-gram
    counts, never the texts).
    """
    if data.eval is None or len(data.eval) == 0:
        return 0.0, 0, {"client_id": data.client_id}
    set_adapter_arrays(runtime.model, global_arrays)
    scores, generated = evaluate_run(runtime.model, runtime.tokenizer, data.eval.dataset, config)
    metrics: Metrics = {k: float(v) for k, v in scores.items() if k != "num_examples"}
    if generated is not None:  # the sums, so the server pools every client's answers exactly
        metrics.update(generated.to_scalars())
    metrics["client_id"] = data.client_id
    return float(scores["loss"]), len(data.eval), metrics

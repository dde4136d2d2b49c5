"""A client's round, as plain functions the Flower app calls.

``fit`` receives the global adapter, trains locally (privately when configured) and
returns only the adapter *delta* and named metrics; base weights and data never leave.
Under DP or SecAgg+ the metrics are only what the privacy accounting covers or needs
(ε, δ, σ, q, steps and this run's ledger entries); statistics of the private rows that
neither covers (training loss, counts) go out only with ``privacy.share-training-metrics``.
"""

from __future__ import annotations

import dataclasses
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
    noiseless = DPSettings(
        noise_multiplier=0.0,
        max_grad_norm=settings.max_grad_norm,
        grad_sample_mode=settings.grad_sample_mode,
    )
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
    reply_key: str = "",
) -> FitReply:
    """One round of local training; refuses (zero delta, weight 0) if over budget.

    ``clip_update_to`` (central DP) clips the whole delta to that L2 norm before it leaves.
    ``secagg_range`` = (clipping range, max weight) of SecAgg+: the client counts the
    values SecAgg+ would clip, so clipping is reported instead of silent. ``reply_key``
    (client/replay.py) is stored with the round's ledger entries.
    """
    model = runtime.model
    set_adapter_arrays(model, global_arrays)
    plan: RoundPlan | None = None
    if ledger is not None:
        decided = plan_round(config, ledger, len(data.train), run=run)
        if not isinstance(decided, RoundPlan):
            ledger.stopped_for_budget = True
            reply = refuse(data, global_arrays, decided.reason, detail=decided.detail)
            reply.metrics.update(privacy_metrics(ledger, run=run))
            return reply
        plan = decided
        preflight(config, runtime, plan.settings)
    settings = plan.settings if plan else None
    if settings is not None and config.privacy.reproducible_noise:
        noise_seed = _seed(config, data.client_id, server_round)
        settings = dataclasses.replace(settings, noise_seed=noise_seed)
    result = train_adapter(
        model,
        data.train.dataset,
        task=config.model.task,
        config=config.training,
        dp=settings,
        seed=_seed(config, data.client_id, server_round),
    )
    metrics: Metrics = {"client_id": data.client_id, "steps": result.steps, "refused": False}
    if ledger is not None:
        for entry in result.privacy_entries:
            ledger.record(entry, run=run, server_round=server_round, key=reply_key)
        metrics.update(privacy_metrics(ledger, run=run))
        assert plan is not None
        metrics.update(noise_multiplier=plan.entry[0], sample_rate=plan.entry[1])
    delta = subtract(get_adapter_arrays(model), global_arrays)
    if clip_update_to is not None:
        clip_inputs_inplace(delta, clip_update_to)
    weight = 1 if config.equal_weights else len(data.train)
    statistics: Metrics = {
        "train_loss": result.loss,
        "num_too_long": data.train.num_too_long,
        "empty_batches": result.empty_batches,
    }
    if secagg_range is not None:
        clipped = count_clipped(delta, weight, *secagg_range)
        statistics["secagg_clipped_values"] = clipped
        if clipped:
            log.error(
                "client %s: %s delta values exceed SecAgg+'s clipping range ±%g and will be "
                "clipped (secure-aggregation.clipping-range)",
                data.client_id,
                clipped,
                secagg_range[0],
            )
    # Statistics of the private rows: not under DP, which does not cover them, nor under
    # SecAgg+, whose server must learn only the sum (unless the run and the node's policy
    # both allow it: privacy.share-training-metrics).
    if (ledger is None and secagg_range is None) or config.privacy.share_training_metrics:
        metrics.update(statistics)
    return FitReply(delta, weight, metrics)


def count_clipped(
    delta: Sequence[np.ndarray], weight: float, clipping_range: float, max_weight: float
) -> int:
    """Values SecAgg+ would clip: it scales by weight/max_weight, then clips to ±range."""
    scale = weight / max_weight
    return int(sum(int(np.count_nonzero(np.abs(a) * scale > clipping_range)) for a in delta))


def refuse(
    data: ClientData, global_arrays: Sequence[np.ndarray], reason: str, *, detail: str = ""
) -> FitReply:
    """A refusal: zero delta with weight 0 (plain rounds; under SecAgg+ the client app
    raises instead, so that a refusing node sends nothing into the sum at all)."""
    log.warning("client %s refuses to train: %s", data.client_id, detail or reason)
    zeros = [np.zeros_like(a, dtype=np.float32) for a in global_arrays]
    metrics: Metrics = {"client_id": data.client_id, "refused": True, "refusal": reason}
    return FitReply(zeros, 0, metrics)


def privacy_metrics(ledger: PrivacyLedger, *, run: str) -> Metrics:
    """What the server learns of this client's privacy: this run's part of the ledger.

    A node's ledger spans every run it joined; other federations' entries and the node's
    lifetime ε stay on the node (its budget refusals say only that it is reached).
    """
    mine = ledger.for_run(run)
    return {
        "epsilon": float(mine.epsilon),
        "dp_delta": float(mine.delta),
        "privacy_history": mine.to_json(),
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

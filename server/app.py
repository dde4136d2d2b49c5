"""The Flower ServerApp: reads Flower's Context, builds the run, drives the rounds.

Everything below :func:`run_server` is plain Python; this module is the only place on
the server that knows about Flower's Context and run_config.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common import protocol
from common.config import (
    DEPLOYED_KEY,
    OUTPUT_DIR_KEY,
    RESUME_KEY,
    VERBOSE_KEY,
    RunConfig,
    from_run_config,
)
from common.data.pipeline import largest_train_split
from common.errors import PrivatuneError
from common.lora import frozen_fingerprint
from common.outcome import Outcome
from common.progress_log import route_progress
from server import exchange, secagg
from server.central_dp import CentralDP
from server.checkpoint import Checkpoint, restore_rng, rng_state, save_checkpoint
from server.model import ServerModel
from server.outputs import ERROR_LOG, RunOutputs
from server.resume import check_resumable, rewind_metrics
from server.rounds import Next, RoundBook
from server.strategy.registry import build_strategy
from server.strategy.server_opt import build_server_optimizer
from server.traffic import CountingGrid
from server.workflow import legacy_context, run_rounds

log = logging.getLogger("privatune")


def run_server(
    grid: Grid,
    context: Context,
    config: RunConfig,
    output_dir: Path,
    *,
    resume: bool = False,
    deployed: bool = False,
) -> dict:
    """Run every round and write the output folder; returns the run summary.

    With ``resume`` the run continues from the folder's checkpoint (server/resume.py
    checks it may); otherwise it starts afresh. A checkpoint is written after every round.
    ``deployed``: the clients are organisations' nodes, each training on its own data
    (the saved config says so). A run that fails still writes its summary and adapter.
    """
    started = time.monotonic()
    secagg.check_compatible(config)
    if config.privacy.enabled and config.privacy.reproducible_noise:
        log.warning(
            "privacy.reproducible-noise is on: the clients' DP noise follows training.seed, "
            "so whoever knows the seed can remove it; this run is NOT private"
        )
    outputs = RunOutputs(output_dir)
    checkpoint: Checkpoint | None = None
    history: list[dict[str, Any]] = []
    if resume:
        config, checkpoint = check_resumable(output_dir, config)
        history = rewind_metrics(output_dir, checkpoint.round)
        log.info("resuming %s after round %s", output_dir, checkpoint.round)
    else:
        outputs.write_config((DEPLOYED_NOTE if deployed else "") + config.to_toml())
        # Flower samples clients with `random` (not a privacy choice: central DP samples
        # and draws its noise from its own secret generator, server/central_dp.py).
        random.seed(config.training.seed)
    run_key = checkpoint.run_key if checkpoint else uuid.uuid4().hex
    settings = (
        secagg.calibrate(config, largest_client=largest_train_split(config))
        if config.secure_aggregation.enabled
        else None
    )
    server_model = ServerModel(config)
    general_before = server_model.general_scores(server_model.initial)
    fed = config.federation
    server_optimizer = build_server_optimizer(
        config.server_optimizer.name, **config.server_optimizer.hyper()
    )
    if checkpoint is not None:
        server_optimizer.load_state_dict(checkpoint.server_optimizer)
    initial = checkpoint.global_arrays if checkpoint else server_model.initial
    strategy = build_strategy(
        fed.strategy,
        spec=server_model.spec,
        initial=initial,
        clients_per_round=fed.clients_per_round,
        min_clients=fed.min_clients,
        evaluate_clients=fed.evaluate_clients,
        central_eval=server_model.evaluate,
        fixed_weight=config.equal_weights,
        wait_for_clients=fed.wait_for_clients,
        max_update_norm=fed.max_update_norm,
        max_update_bytes=fed.max_update_bytes,
        extra_fit_config={
            protocol.RUN_KEY: run_key,
            **_extra_fit_config(config, settings, server_model),
        },
        server_optimizer=server_optimizer,
        central_dp=CentralDP.from_config(config),
    )
    # Under SecAgg+ replies arrive with narrowed masked vectors, widened after counting.
    counting = secagg.WideningGrid(grid) if settings is not None else CountingGrid(grid)
    book = RoundBook(config, outputs, server_model.save, secagg=settings)
    book.latest = initial
    book.history = history
    if checkpoint is not None:
        book.central_entries = list(checkpoint.central_entries)
        book.ledgers.update(checkpoint.ledgers.get("clients", {}))
        if book.ledgers.ledgers:
            outputs.write_ledger(book.ledgers.to_dict())
    stopped = checkpoint is not None and checkpoint.stopped

    def on_round_end(server_round: int, seconds: float, arrays: list[np.ndarray]) -> Next:
        nonlocal checkpoint
        record = strategy.records.pop(server_round, {"round": server_round})
        if isinstance(counting, secagg.WideningGrid):
            secagg.count_refusals(record, counting.take_refusals())
        decision = book.close_round(record, seconds, arrays, counting.take())
        if decision is not Next.RETRY:
            checkpoint = Checkpoint(
                round=server_round,
                run_key=run_key,
                global_arrays=arrays,
                server_optimizer=server_optimizer.state_dict(),
                rng=rng_state(),
                ledgers=book.ledgers.to_dict(),
                central_entries=list(book.central_entries),
                stopped=decision is Next.END,
            )
            save_checkpoint(outputs.dir, checkpoint)
        return decision

    fit_step = (
        secagg.workflow(settings, timeout=fed.round_timeout)
        if settings is not None
        else exchange.fit_step(timeout=fed.round_timeout, sink=strategy)
    )
    if checkpoint is not None:
        restore_rng(checkpoint.rng)  # last, so that nothing above draws from it
    error: str | None = None
    if not stopped:
        try:
            run_rounds(
                counting,
                legacy_context(
                    context,
                    strategy=strategy,
                    num_rounds=fed.rounds,
                    round_timeout=fed.round_timeout,
                ),
                on_round_end=on_round_end,
                fit_step=fit_step,
                evaluate_step=exchange.evaluate_step(timeout=fed.round_timeout, sink=strategy),
                resume_from=(checkpoint.round, checkpoint.global_arrays) if checkpoint else None,
                evaluate_untrained=fed.evaluate_clients > 0 and not server_model.has_eval_set,
            )
        except PrivatuneError as exc:
            # A failure the config or the clients caused: one line, and the outputs below.
            error = str(exc)
            log.error("run failed: %s", error)
        except Exception as exc:  # noqa: BLE001 -- a bug: its traceback goes to a file
            error = internal_error(outputs.dir, exc)
    outputs.save_adapter_dir(
        outputs.adapter_dir(), lambda folder: server_model.save(book.latest, folder)
    )
    if general_before is not None:
        after = server_model.general_scores(book.latest)
        outputs.write_forgetting(forgetting_record(config, book.history, general_before, after))
    summary = summarise(book.history, config, time.monotonic() - started, error=error)
    summary["adapter_params"] = server_model.spec.num_params
    outputs.write_summary(summary)
    if checkpoint is not None and summary["outcome"] != Outcome.FAILED.value:
        checkpoint.finished = True  # a failed run stays resumable from its last round
        save_checkpoint(outputs.dir, checkpoint)
    return summary


DEPLOYED_NOTE = """\
# A deployed run: every organisation's node trained on its own data (node.toml's
# data-path) under its own policy; the [data] source and partitioning below were not used
# by any node. The rest is the config every node received.

"""


def _extra_fit_config(
    config: RunConfig, settings: secagg.SecAggSettings | None, server_model: ServerModel
) -> dict[str, float | str]:
    """What every fit instruction carries besides the round number.

    The SecAgg+ range lets clients report values that would be clipped; the fingerprint
    of the frozen A matrices lets FFA-LoRA clients check they share the server's.
    """
    extra: dict[str, float | str] = {}
    if settings is not None:
        extra[protocol.SECAGG_CLIPPING_RANGE] = settings.clipping_range
        extra[protocol.SECAGG_MAX_WEIGHT] = settings.max_weight
    if config.lora.variant == "ffa":
        extra[protocol.FROZEN_FINGERPRINT] = frozen_fingerprint(server_model.model)
    return extra


def forgetting_record(
    config: RunConfig, history: list[dict[str, Any]], before: dict, after: dict | None
) -> dict[str, Any]:
    """forgetting.json: the general set's metrics before training and after the last round."""
    last = max((r["round"] for r in history), default=0)
    return {
        "general_eval": config.data.general_eval,
        "before_round": 0,
        "after_round": last,
        "before": before,
        "after": after or {},
    }


def internal_error(folder: Path, exc: BaseException) -> str:
    """A bug, not bad input: the traceback goes to ``error.log``, the operator gets a line."""
    import traceback

    path = folder / ERROR_LOG
    path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    message = f"internal error {type(exc).__name__}: {exc} (traceback in {path})"
    log.error("run failed: %s", message)
    return message


def _last_attempts(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trained round's last record: a SecAgg+ round retried after a failure counts
    once, as its last attempt went."""
    return list({r["round"]: r for r in history if r["round"] > 0}.values())


def run_outcome(history: list[dict[str, Any]], rounds: int, error: str | None) -> Outcome:
    """Completed only if every round asked for ran; else why not (common/outcome.py)."""
    trained = _last_attempts(history)
    if error is not None or any(r.get("failed") for r in trained):
        return Outcome.FAILED
    stop = next((r for r in trained if r.get("stopped")), None)
    if stop is not None:
        return Outcome(stop.get("stop_outcome", Outcome.REFUSED.value))
    done = {r["round"] for r in trained}
    return Outcome.COMPLETED if done >= set(range(1, rounds + 1)) else Outcome.FAILED


def _evaluated(history: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Which evaluation the headline figures come from: the server's held-out set, else
    the nodes' federated evaluation; its round-0 row (the untrained adapter) and its last."""
    for source, key in (("server", "eval_accuracy"), ("federated", "fed_eval_accuracy")):
        rows = [r for r in history if r.get(key) is not None or r.get(_loss_key(key)) is not None]
        if rows:
            untrained = rows[0] if rows[0]["round"] == 0 else {}
            return source, untrained, rows[-1]
    return None, {}, {}


def _loss_key(accuracy_key: str) -> str:
    return accuracy_key.replace("accuracy", "loss")


def summarise(
    history: list[dict[str, Any]], config: RunConfig, seconds: float, *, error: str | None = None
) -> dict:
    source, first, last = _evaluated(history)
    acc = "eval_accuracy" if source != "federated" else "fed_eval_accuracy"
    trained = _last_attempts(history)
    outcome = run_outcome(history, config.federation.rounds, error)
    summary: dict[str, Any] = {
        "outcome": outcome.value,
        "exit_code": outcome.exit_code,
        "error": error,
        "rounds_requested": config.federation.rounds,
        "rounds_completed": sum(1 for r in trained if not r.get("failed") and not r.get("stopped")),
        "rounds_failed": sum(1 for r in trained if r.get("failed")),
        "stopped_early": next((r["stopped"] for r in history if r.get("stopped")), None),
        "eval_source": source,  # "server", "federated" or None (no evaluation ran)
        "untrained_eval_accuracy": first.get(acc),
        "final_eval_accuracy": last.get(acc),
        "untrained_eval_loss": first.get(_loss_key(acc)),
        "final_eval_loss": last.get(_loss_key(acc)),
        "dp": config.privacy.enabled,
        "secure_aggregation": config.secure_aggregation.enabled,
        # What was fine-tuned and how it was aggregated, for the report.
        "peft_method": config.peft.method,
        "strategy": config.federation.strategy,
        "quantization": config.model.quantization,
        "seconds": round(seconds, 1),
    }
    if config.peft.method == "lora":
        summary["lora_variant"] = config.lora.variant
        summary["lora_rank"] = config.lora.r
    if config.lora.ranks:
        summary["lora_client_ranks"] = list(config.lora.ranks)
    if config.privacy.enabled:
        summary["epsilon_max"] = last.get("epsilon_max")
        # What the ε above does not cover, said where nobody can miss it.
        summary["private"] = not config.privacy.reproducible_noise
        summary["reproducible_noise"] = config.privacy.reproducible_noise
        summary["training_metrics_shared"] = config.privacy.share_training_metrics
    if config.central_dp.enabled:
        summary["central_epsilon"] = last.get("central_epsilon")
    if config.privacy.enabled or config.central_dp.enabled:
        summary["delta"] = config.privacy.delta
    return summary


def _flag(context: Context, key: str) -> bool:
    value = context.run_config.get(key, False)
    return value is True or str(value).lower() in ("true", "1", "yes")


def _resume_asked(context: Context) -> bool:
    """``resume = true`` in the run config (``coordinator run --resume``, ``flwr run``)."""
    return _flag(context, RESUME_KEY)


def _explained_by_round_line(record: logging.LogRecord) -> bool:
    """Drop Flower's SecAgg+ "Insufficient available nodes." (an ERROR it logs when every
    sampled node refused): the round's own line that follows names each refusal."""
    return record.getMessage() != "Insufficient available nodes."


def _progress_to_stdout(*, verbose: bool) -> None:
    """Deployed, the ServerApp runs in Flower's own process, not under our CLI: give our
    progress lines a handler there, on stdout, which Flower streams to ``flwr run
    --stream`` (``privatune coordinator run``). Flower's own INFO lines (four per SecAgg+
    round) only with ``verbose``: the round's line says what they would."""
    if logging.getLogger("privatune").handlers:  # under our CLI (a simulation): set up
        return
    route_progress(sys.stdout, verbose=verbose)
    flower = logging.getLogger("flwr")
    # Opacus calls logging.basicConfig() on import: without this every Flower line would
    # print twice (Flower's own handler, then the root one).
    flower.propagate = False
    if not verbose:
        flower.addFilter(_explained_by_round_line)


def make_server_app(
    config: RunConfig | None = None, output_dir: Path | None = None, *, resume: bool = False
) -> ServerApp:
    """A ServerApp for ``config``, or one that reads ``context.run_config`` (flwr run).

    ``resume`` (or ``resume = true`` in the run config) continues the run in the output
    folder from its checkpoint.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _progress_to_stdout(verbose=_flag(context, VERBOSE_KEY))
        named = str(context.run_config.get(OUTPUT_DIR_KEY, "") or "")
        folder = output_dir or Path(named or f"runs/flwr-{int(time.time())}")
        cfg = config if config is not None else from_run_config(context.run_config)
        run_server(
            grid,
            context,
            cfg,
            folder,
            resume=resume or _resume_asked(context),
            deployed=_flag(context, DEPLOYED_KEY),
        )

    return app


app = make_server_app()

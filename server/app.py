"""The Flower ServerApp: reads Flower's Context, builds the run, drives the rounds.

Everything below :func:`run_server` is plain Python; this module is the only place on
the server that knows about Flower's Context and run_config.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common import protocol
from common.adapters import frozen_fingerprint
from common.config import OUTPUT_DIR_KEY, RunConfig, from_run_config
from common.data.pipeline import largest_train_split
from server import central_dp, secagg
from server.model import ServerModel
from server.outputs import RunOutputs
from server.rounds import Next, RoundBook
from server.strategy.registry import build_strategy
from server.strategy.server_opt import build_server_optimizer
from server.traffic import CountingGrid
from server.workflow import default_fit_workflow, legacy_context, run_rounds

log = logging.getLogger("privatune")


def run_server(grid: Grid, context: Context, config: RunConfig, output_dir: Path) -> dict:
    """Run every round and write the output folder; returns the run summary."""
    started = time.monotonic()
    secagg.check_compatible(config)
    outputs = RunOutputs(output_dir)
    outputs.write_config(config.to_toml())
    random.seed(config.training.seed)  # Flower samples clients with `random`
    np.random.seed(config.training.seed)  # and draws central-DP noise with numpy
    settings = (
        secagg.calibrate(config, largest_client=largest_train_split(config))
        if config.secure_aggregation.enabled
        else None
    )
    server_model = ServerModel(config)
    general_before = server_model.general_scores(server_model.initial)
    fed = config.federation
    strategy = build_strategy(
        fed.strategy,
        spec=server_model.spec,
        initial=server_model.initial,
        clients_per_round=fed.clients_per_round,
        min_clients=fed.min_clients,
        evaluate_clients=fed.evaluate_clients,
        central_eval=server_model.evaluate,
        fixed_weight=config.equal_weights,
        wait_for_clients=fed.wait_for_clients,
        extra_fit_config=_extra_fit_config(config, settings, server_model),
        server_optimizer=build_server_optimizer(
            config.server_optimizer.name, **config.server_optimizer.hyper()
        ),
    )
    counting = CountingGrid(grid)
    book = RoundBook(config, outputs, server_model.save, secagg=settings)
    book.latest = server_model.initial

    def on_round_end(server_round: int, seconds: float, arrays: list[np.ndarray]) -> Next:
        record = strategy.records.pop(server_round, {"round": server_round})
        return book.close_round(record, seconds, arrays, counting.take())

    fit_step = (
        secagg.workflow(settings, timeout=fed.round_timeout)
        if settings is not None
        else default_fit_workflow
    )
    run_rounds(
        counting,
        legacy_context(
            context,
            strategy=central_dp.wrap(strategy, config),
            num_rounds=fed.rounds,
            round_timeout=fed.round_timeout,
        ),
        on_round_end=on_round_end,
        fit_step=fit_step,
    )
    outputs.save_adapter_dir(
        outputs.adapter_dir(), lambda folder: server_model.save(book.latest, folder)
    )
    if general_before is not None:
        after = server_model.general_scores(book.latest)
        outputs.write_forgetting(forgetting_record(config, book.history, general_before, after))
    summary = summarise(book.history, config, time.monotonic() - started)
    outputs.write_summary(summary)
    return summary


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


def summarise(history: list[dict[str, Any]], config: RunConfig, seconds: float) -> dict:
    first = history[0] if history else {}
    last = history[-1] if history else {}
    trained = [r for r in history if r["round"] > 0]
    summary: dict[str, Any] = {
        "rounds_completed": sum(1 for r in trained if not r.get("failed") and not r.get("stopped")),
        "rounds_failed": sum(1 for r in trained if r.get("failed")),
        "stopped_early": next((r["stopped"] for r in history if r.get("stopped")), None),
        "untrained_eval_accuracy": first.get("eval_accuracy"),
        "final_eval_accuracy": last.get("eval_accuracy"),
        "untrained_eval_loss": first.get("eval_loss"),
        "final_eval_loss": last.get("eval_loss"),
        "dp": config.privacy.enabled,
        "secure_aggregation": config.secure_aggregation.enabled,
        "strategy": config.federation.strategy,
        "seconds": round(seconds, 1),
    }
    if config.privacy.enabled:
        summary["epsilon_max"] = last.get("epsilon_max")
    if config.central_dp.enabled:
        summary["central_epsilon"] = last.get("central_epsilon")
    if config.privacy.enabled or config.central_dp.enabled:
        summary["delta"] = config.privacy.delta
    return summary


def make_server_app(config: RunConfig | None = None, output_dir: Path | None = None) -> ServerApp:
    """A ServerApp for ``config``, or one that reads ``context.run_config`` (flwr run)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        named = str(context.run_config.get(OUTPUT_DIR_KEY, "") or "")
        folder = output_dir or Path(named or f"runs/flwr-{int(time.time())}")
        cfg = config if config is not None else from_run_config(context.run_config)
        run_server(grid, context, cfg, folder)

    return app


app = make_server_app()

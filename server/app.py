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

from common.config import OUTPUT_DIR_KEY, RunConfig, from_run_config
from server import central_dp
from server.central_dp import central_epsilon
from server.ledgers import LedgerBook
from server.model import ServerModel
from server.outputs import RunOutputs
from server.strategy.registry import build_strategy
from server.workflow import legacy_context, run_rounds

log = logging.getLogger("privatune")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def progress_line(record: dict[str, Any], num_rounds: int) -> str:
    """One human line per round: what a researcher watches while a run goes."""
    rnd = record["round"]
    if rnd == 0:
        return (
            f"round 0/{num_rounds} (untrained adapter) | eval loss "
            f"{_fmt(record.get('eval_loss'), '.4f')} | eval acc "
            f"{_fmt(record.get('eval_accuracy'), '.3f')}"
        )
    parts = [
        f"round {rnd}/{num_rounds}",
        f"{record.get('num_clients', 0)}/{record.get('num_sampled', 0)} clients"
        f" ({record.get('num_failures', 0)} failed, {record.get('num_refused', 0)} refused)",
        f"train loss {_fmt(record.get('train_loss'), '.4f')}",
        f"eval loss {_fmt(record.get('eval_loss'), '.4f')}",
        f"eval acc {_fmt(record.get('eval_accuracy'), '.3f')}",
    ]
    if record.get("epsilon_max") is not None:
        parts.append(f"ε max {record['epsilon_max']:.3f}")
    if record.get("central_epsilon") is not None:
        parts.append(f"user-level ε {record['central_epsilon']:.3f}")
    parts.append(f"{record.get('round_seconds', 0.0):.1f} s")
    if record.get("failed"):
        parts.append(f"FAILED: {record.get('error', '')}")
    if record.get("stopped"):
        parts.append(f"STOPPED: {record['stopped']}")
    return " | ".join(parts)


def run_server(grid: Grid, context: Context, config: RunConfig, output_dir: Path) -> dict:
    """Run every round and write the output folder; returns the run summary."""
    started = time.monotonic()
    outputs = RunOutputs(output_dir)
    outputs.write_config(config.to_toml())
    random.seed(config.training.seed)  # Flower samples clients with `random`
    np.random.seed(config.training.seed)  # and draws central-DP noise with numpy
    server_model = ServerModel(config)
    fed = config.federation
    strategy = build_strategy(
        fed.strategy,
        spec=server_model.spec,
        initial=server_model.initial,
        clients_per_round=fed.clients_per_round,
        min_clients=fed.min_clients,
        evaluate_clients=fed.evaluate_clients,
        central_eval=server_model.evaluate,
        fixed_weight=config.secure_aggregation.fixed_weight or config.central_dp.enabled,
        wait_for_clients=fed.wait_for_clients,
    )
    strategy_in_use = central_dp.wrap(strategy, config)
    noisy_rounds = [0]
    ledgers = LedgerBook(config.privacy.delta)
    history: list[dict[str, Any]] = []

    latest: list[list[np.ndarray]] = [server_model.initial]

    def on_round_end(server_round: int, seconds: float, arrays: list[np.ndarray]) -> bool:
        latest[0] = arrays
        record = strategy.records.pop(server_round, {"round": server_round})
        histories = record.pop("privacy_histories", None)
        if histories:
            ledgers.update(histories)
            outputs.write_ledger(ledgers.to_dict())
        if config.privacy.enabled and server_round > 0:
            record["epsilon_max"] = ledgers.epsilon_max()
        if config.central_dp.enabled and server_round > 0:
            noisy_rounds[0] += 0 if record.get("failed") or record.get("stopped") else 1
            record["central_epsilon"] = central_epsilon(config, noisy_rounds[0])
        record["secagg"] = config.secure_aggregation.enabled
        if server_round > 0:
            record["round_seconds"] = round(seconds, 3)
            outputs.save_adapter_dir(
                outputs.checkpoint_dir(server_round),
                lambda folder: server_model.save(arrays, folder),
            )
        exhausted = server_round > 0 and 0 < record.get("num_sampled", 0) == record.get(
            "num_refused", -1
        )
        if exhausted:
            record["stopped"] = "every sampled client refused: privacy budgets exhausted"
            record["failed"] = False
            record.pop("error", None)
        outputs.append_metrics(record)
        history.append(record)
        log.info(progress_line(record, fed.rounds))
        if exhausted:
            log.warning("round %s: %s; ending the run early", server_round, record["stopped"])
        return not exhausted

    run_rounds(
        grid,
        legacy_context(
            context,
            strategy=strategy_in_use,
            num_rounds=fed.rounds,
            round_timeout=fed.round_timeout,
        ),
        on_round_end=on_round_end,
    )
    outputs.save_adapter_dir(
        outputs.adapter_dir(), lambda folder: server_model.save(latest[0], folder)
    )
    summary = summarise(history, config, time.monotonic() - started)
    outputs.write_summary(summary)
    return summary


def summarise(history: list[dict[str, Any]], config: RunConfig, seconds: float) -> dict:
    first = history[0] if history else {}
    last = history[-1] if history else {}
    summary: dict[str, Any] = {
        "rounds_completed": sum(
            1 for r in history if r["round"] > 0 and not r.get("failed") and not r.get("stopped")
        ),
        "rounds_failed": sum(1 for r in history if r.get("failed")),
        "stopped_early": next((r["stopped"] for r in history if r.get("stopped")), None),
        "untrained_eval_accuracy": first.get("eval_accuracy"),
        "final_eval_accuracy": last.get("eval_accuracy"),
        "untrained_eval_loss": first.get("eval_loss"),
        "final_eval_loss": last.get("eval_loss"),
        "dp": config.privacy.enabled,
        "secure_aggregation": config.secure_aggregation.enabled,
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

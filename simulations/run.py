"""`privatune simulate`: many virtual clients on this machine with Flower's simulation engine.

The same ServerApp and ClientApp as a deployment run, handed the validated config
directly; Flower's Ray backend runs the virtual clients, one CPU and one torch thread
each by default (two cores run two clients at a time).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from common.config import RunConfig
from common.errors import PrivatuneError
from server.outputs import METRICS_FILE

log = logging.getLogger("privatune")


def require_completed(summary: dict, what: str) -> dict:
    """For tools built on runs (audit, benchmarks): a run that did not complete is an
    error there, not a data point."""
    from common.outcome import Outcome, outcome_of

    outcome = outcome_of(summary)
    if outcome is not Outcome.COMPLETED:
        why = summary.get("error") or summary.get("stopped_early") or "see its metrics.jsonl"
        raise PrivatuneError(f"{what}: the run ended {outcome.value}: {why}")
    return summary


def check_output_dir(output_dir: Path, *, overwrite: bool) -> None:
    """Never silently mix two runs in one folder (clients' ledgers included)."""
    from client.ledger_store import CLIENT_LEDGERS_DIR
    from server.checkpoint import CHECKPOINT_FILE

    for name in (METRICS_FILE, CHECKPOINT_FILE, CLIENT_LEDGERS_DIR):
        if (output_dir / name).exists() and not overwrite:
            raise PrivatuneError(
                f"--output {output_dir} already holds a run ({name} exists); choose another "
                "folder, pass --overwrite to replace it, or --resume it if it was stopped"
            )
    if overwrite and output_dir.exists():
        import shutil

        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)


def backend_config(config: RunConfig) -> dict:
    sim = config.simulation
    return {
        "client_resources": {"num_cpus": sim.cpus_per_client, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": sim.total_cpus or os.cpu_count() or 1,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": "error",
            # Client-side logs stay in the actors; failures reach the server as errors.
            "log_to_driver": False,
        },
    }


def _quiet_environment(config: RunConfig) -> None:
    """Settings Ray's worker processes inherit: offline, one thread per client."""
    threads = str(config.training.threads)
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _quiet_flower(verbose: bool) -> None:
    """Flower sets its logger to DEBUG on import; keep only warnings unless --verbose."""
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.DEBUG if verbose else logging.WARNING)
    flower.propagate = False


def simulate(
    config: RunConfig | None,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    report: bool = True,
    verbose: bool = False,
    client_mods: list | None = None,
) -> dict:
    """Run the federation and write the output folder (and report); returns the summary.

    ``resume`` continues the killed run in ``output_dir`` from its last checkpoint, with
    its saved config (``config`` None) or one that differs only in how the run executes
    (server/resume.py). Each virtual client's privacy ledger is a file in
    ``output_dir/client_ledgers/``, so a resumed run continues every client's ε.
    ``client_mods`` are extra Flower client mods placed inside SecAgg+ (they see the plain
    reply before it is masked); the tests use them to record updates and inject faults.
    """
    from server.resume import check_resumable

    output_dir = Path(output_dir)
    if resume:
        if overwrite:
            raise PrivatuneError("--resume continues a run; it cannot be combined with --overwrite")
        config, _ = check_resumable(output_dir, config)
    elif config is None:
        raise PrivatuneError("simulate: a config is needed unless resuming")
    from server.strategy.registry import STRATEGIES

    if config.federation.strategy not in STRATEGIES:
        raise PrivatuneError(
            f"federation.strategy: unknown strategy {config.federation.strategy!r}; "
            f"choose one of {sorted(STRATEGIES)}"
        )
    from common.preflight import check_inputs

    # Bad instruction sets, model folders and data rows fail here, before the output
    # folder is touched.
    check_inputs(config)
    if not resume:
        check_output_dir(output_dir, overwrite=overwrite)
    _quiet_environment(config)

    from flwr.simulation import run_simulation

    from client.app import make_client_app
    from client.ledger_store import CLIENT_LEDGERS_DIR
    from server.app import make_server_app
    from server.outputs import SUMMARY_FILE
    from simulations.dispatch import dispatch_by_destination

    _quiet_flower(verbose)
    dispatch_by_destination()  # round time independent of the number of registered clients

    log.info(
        "%s %s clients (%s per round, %s rounds) -> %s",
        "resuming" if resume else "simulating",
        config.federation.num_clients,
        config.federation.clients_per_round,
        config.federation.rounds,
        output_dir,
    )
    run_simulation(
        server_app=make_server_app(config, output_dir, resume=resume),
        client_app=make_client_app(
            config, extra_mods=client_mods, ledger_dir=output_dir.resolve() / CLIENT_LEDGERS_DIR
        ),
        num_supernodes=config.federation.num_clients,
        backend_config=backend_config(config),
    )
    summary_path = output_dir / SUMMARY_FILE
    if not summary_path.exists():
        raise PrivatuneError(
            f"the simulation ended without writing {summary_path}; see the log above for "
            "the failing round or client"
        )
    import json

    summary = json.loads(summary_path.read_text())
    if report:
        from server.report import write_report

        path = write_report(output_dir)
        log.info("report: %s", path)
    return summary

"""The single seam to Flower's legacy workflow path.

flwr 1.41 offers SecAgg+ only on the legacy path (``LegacyContext`` + a
``flwr.server.strategy`` strategy + the default workflows), so every run goes through
it: secure aggregation then replaces only the fit step. This module repeats the shape of
``DefaultWorkflow.__call__`` with what the run needs besides: a hook after every round
(metrics, checkpoints, ledger), fit and evaluate steps that can be swapped (for ones
that survive faulty clients, server/exchange.py), and a start from a checkpoint.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.default_workflows import (
    default_centralized_evaluation_workflow,
    default_evaluate_workflow,
    default_fit_workflow,
    default_init_params_workflow,
)
from flwr.serverapp import Grid

from server.rounds import Next

FitStep = Callable[[Grid, LegacyContext], None]
RoundHook = Callable[[int, float, list[np.ndarray]], "Next"]


def global_arrays(context: LegacyContext) -> list[np.ndarray]:
    """The global adapter as the workflow holds it (after any wrapper's noise)."""
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))


def legacy_context(context, *, strategy, num_rounds: int, round_timeout: float | None):  # type: ignore[no-untyped-def]
    return LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=num_rounds, round_timeout=round_timeout),
        strategy=strategy,
    )


def run_rounds(
    grid: Grid,
    context: LegacyContext,
    *,
    on_round_end: RoundHook,
    fit_step: FitStep = default_fit_workflow,
    evaluate_step: FitStep = default_evaluate_workflow,
    resume_from: tuple[int, list[np.ndarray]] | None = None,
    evaluate_untrained: bool = False,
) -> None:
    """Initialise, then for every round: fit, central evaluation, federated evaluation.

    ``on_round_end`` gets the round, its seconds and the global adapter, and says whether
    to go on, retry the round (a failed secure-aggregation round) or end the run.
    ``resume_from`` = (last completed round, its global adapter) continues a run from its
    checkpoint: no initialisation, no round 0, the next round first.
    ``evaluate_untrained`` runs federated evaluation in round 0 too (when the server has
    no held-out set of its own, so that the run still has a before and an after).
    """
    thread, stop, registered = start_update_client_manager_thread(grid, context.client_manager)
    registered.wait()
    config = ConfigRecord()
    config[Key.START_TIME] = timeit.default_timer()
    try:
        if resume_from is None:
            default_init_params_workflow(grid, context)
            if evaluate_untrained:
                config[Key.CURRENT_ROUND] = 0
                context.state.config_records[MAIN_CONFIGS_RECORD] = config
                evaluate_step(grid, context)
            on_round_end(0, 0.0, global_arrays(context))
            server_round = 1
        else:
            done, arrays = resume_from
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                ndarrays_to_parameters(arrays), keep_input=True
            )
            server_round = done + 1
        context.state.config_records[MAIN_CONFIGS_RECORD] = config
        while server_round <= context.config.num_rounds:
            started = timeit.default_timer()
            config[Key.CURRENT_ROUND] = server_round
            fit_step(grid, context)
            default_centralized_evaluation_workflow(grid, context)
            evaluate_step(grid, context)
            seconds = timeit.default_timer() - started
            decision = on_round_end(server_round, seconds, global_arrays(context))
            if decision is Next.END:
                break
            if decision is Next.CONTINUE:
                server_round += 1
    finally:
        stop.set()
        thread.join()

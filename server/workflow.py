"""The single seam to Flower's legacy workflow path.

flwr 1.41 offers SecAgg+ only on the legacy path (``LegacyContext`` + a
``flwr.server.strategy`` strategy + the default workflows), so every run goes through
it: secure aggregation then replaces only the fit step. This module repeats the shape of
``DefaultWorkflow.__call__`` with two additions the run needs: a hook after every round
(metrics, checkpoints, ledger) and a fit step that can be swapped.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord
from flwr.common import parameters_to_ndarrays
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
) -> None:
    """Initialise, then for every round: fit, central evaluation, federated evaluation.

    ``on_round_end`` gets the round, its seconds and the global adapter, and says whether
    to go on, retry the round (a failed secure-aggregation round) or end the run.
    """
    thread, stop, registered = start_update_client_manager_thread(grid, context.client_manager)
    registered.wait()
    try:
        default_init_params_workflow(grid, context)
        on_round_end(0, 0.0, global_arrays(context))
        config = ConfigRecord()
        config[Key.START_TIME] = timeit.default_timer()
        context.state.config_records[MAIN_CONFIGS_RECORD] = config
        server_round = 1
        while server_round <= context.config.num_rounds:
            started = timeit.default_timer()
            config[Key.CURRENT_ROUND] = server_round
            fit_step(grid, context)
            default_centralized_evaluation_workflow(grid, context)
            default_evaluate_workflow(grid, context)
            seconds = timeit.default_timer() - started
            decision = on_round_end(server_round, seconds, global_arrays(context))
            if decision is Next.END:
                break
            if decision is Next.CONTINUE:
                server_round += 1
    finally:
        stop.set()
        thread.join()

"""The Flower ClientApp: reads Flower's Context, builds the client of one message.

It speaks Flower's legacy client layout (``NumPyClient``) on purpose: SecAgg+ in
flwr 1.41 exists only on that path, and using it for every run keeps secure
aggregation a switch rather than a second code path.

Imports of torch, transformers and the training code happen inside the calls that need
them: a deployed SuperNode starts a fresh process per message, and three of SecAgg+'s
four messages a round never touch the model. On a node started with
``privatune node start`` even the training message stays light: it is forwarded to the
node's long-lived worker (client/worker.py), which keeps the model loaded across rounds.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp

from client.audit import audit_mod
from client.faults import name_failures_mod
from client.node_config import NUM_PARTITIONS_KEY
from client.numpy_client import PrivatuneClient
from client.secagg import secagg_guard
from client.worker import WorkerAddress, WorkerClient
from common.config import RunConfig, from_run_config
from common.transport import unpack_mod


def make_client_app(
    config: RunConfig | None = None,
    extra_mods: list | None = None,
    *,
    ledger_dir: Path | None = None,
) -> ClientApp:
    """A ClientApp for ``config``, or one that reads ``context.run_config`` (flwr run).

    ``ledger_dir`` holds each virtual client's privacy ledger (``<partition>.json``).
    """

    def client_fn(context: Context) -> Client:
        run_config = config if config is not None else from_run_config(context.run_config)
        partitions = context.node_config.get(NUM_PARTITIONS_KEY)
        if partitions is not None and int(partitions) != run_config.federation.num_clients:
            # `flwr run` decides the number of virtual nodes; partition the data for them.
            federation = run_config.federation.model_copy(update={"num_clients": int(partitions)})
            run_config = run_config.model_copy(update={"federation": federation})
        worker = WorkerAddress.from_node_config(context.node_config)
        if worker is not None:  # a deployed node with a warm worker (client/worker.py)
            return WorkerClient(run_config, context, worker).to_client()
        return PrivatuneClient(run_config, context, ledger_dir=ledger_dir).to_client()

    return ClientApp(client_fn=client_fn, mods=client_mods(extra_mods, ledger_dir=ledger_dir))


def client_mods(extra_mods: list | None = None, *, ledger_dir: Path | None = None) -> list:
    """The ClientApp's mods, outermost first.

    Packed arrays are restored before anyone reads them (common/transport.py); the audit
    log sees exactly what leaves the node (error replies too, and SecAgg+'s masked
    vectors as narrowed); a failure anywhere inside becomes an error reply naming the
    client; SecAgg+ wraps everything after it, so extra mods (tests inject faults) see
    the plain reply.
    """
    guard = secagg_guard(ledger_dir)
    return [unpack_mod, audit_mod, name_failures_mod, guard, *(extra_mods or [])]


app = make_client_app()

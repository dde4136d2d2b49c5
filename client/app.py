"""The Flower ClientApp: reads Flower's Context, calls the plain functions in client.node.

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
from typing import Any

from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.audit import audit_mod
from client.faults import name_failures_mod
from client.secagg import secagg_when_requested
from client.worker import WorkerAddress, WorkerClient
from common import protocol
from common.config import OUTPUT_DIR_KEY, RunConfig, from_run_config
from common.transport import unpack_mod

PARTITION_ID_KEY = "partition-id"
NUM_PARTITIONS_KEY = "num-partitions"
NODE_CONFIG_FILE_KEY = "node-config-file"
CLIENT_LEDGERS_DIR = "client_ledgers"  # in a simulation's output folder, one file per client


def _simulated_ledgers(context: Context, ledger_dir: Path | None):  # type: ignore[no-untyped-def]
    """A virtual client's ledger: a file under the run's output folder when one is known.

    ``privatune simulate`` names the folder; under ``flwr run`` an absolute output-dir in
    the run config does. Otherwise the ledger lives in the node's Flower Context, which
    does not survive the process (such a run cannot be resumed with its ledgers).
    A node with a policy file replaces this with its own ledger file.
    """
    from client.ledger_store import ContextLedgerStore, FileLedgerStore

    partition = context.node_config.get(PARTITION_ID_KEY)
    if ledger_dir is None:
        named = Path(str(context.run_config.get(OUTPUT_DIR_KEY, "") or ""))
        if named.is_absolute():
            ledger_dir = named / CLIENT_LEDGERS_DIR
    if partition is None or ledger_dir is None:
        return ContextLedgerStore(context)
    return FileLedgerStore(ledger_dir / f"{int(partition)}.json")


class PrivatuneClient(NumPyClient):
    """Adapter-only client; its ledger lives in the Context (simulation) or a node file."""

    def __init__(
        self, config: RunConfig, context: Context, *, ledger_dir: Path | None = None
    ) -> None:
        from client.ledger_store import FileLedgerStore, LedgerStore
        from client.policy import apply_policy, load_policy, violations
        from client.runtime import get_client_data, get_runtime

        node_config = context.node_config
        self.refusal: str | None = None
        self.run = str(context.run_id)
        self.lifetime_budget: float | None = None
        self.ledgers: LedgerStore = _simulated_ledgers(context, ledger_dir)
        source = None
        if NODE_CONFIG_FILE_KEY in node_config:
            policy = load_policy(str(node_config[NODE_CONFIG_FILE_KEY]))
            problems = violations(policy, config)
            if config.model.task == "sequence-classification" and not config.data.labels:
                problems.append(
                    "the run config must list data.labels: every node maps labels to the same "
                    "ids, and a node sees only its own rows"
                )
            self.refusal = "; ".join(problems) if problems else None
            config = apply_policy(policy, config)
            self.ledgers = FileLedgerStore(policy.ledger_path)
            self.lifetime_budget = policy.max_epsilon
            source = policy.data_path
            self.client_id = policy.name
        partition = node_config.get(PARTITION_ID_KEY)
        self.partition_id = int(partition) if partition is not None else None
        # HetLoRA: this client trains its own rank (the global adapter is truncated to it).
        self.rank: int | None = None
        if config.federation.strategy == "hetlora":
            from common.hetlora import client_config, client_rank

            self.rank = client_rank(config, self.partition_id)
            config = client_config(config, self.rank)
        self.config = config
        self.runtime = get_runtime(config)
        self.data = get_client_data(
            config, self.runtime, partition_id=self.partition_id, source=source
        )
        if source is not None:
            self.data = self.data.renamed(self.client_id)

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        from client.node import fit, privacy_metrics, refuse
        from client.privacy import new_ledger
        from client.replay import fit_or_replay

        refusal = self.refusal or self._frozen_mismatch(config)
        if refusal is not None:
            reply = refuse(self.data, parameters, refusal)
            return reply.delta, reply.num_examples, reply.metrics
        settings = _round_settings(config)
        # The server's run key outlives a server restart; Flower's run id does not.
        run = str(config.get(protocol.RUN_KEY) or self.run)
        global_shapes = [p.shape for p in parameters]
        local = self._local(parameters)
        if not self.config.privacy.enabled:  # no ledger to open, nothing to compose
            reply = fit(
                self.config, self.runtime, self.data, local, ledger=None, run=run, **settings
            )
            delta, num_examples, metrics = reply.delta, reply.num_examples, reply.metrics
        else:
            fresh = new_ledger(self.config, lifetime_budget=self.lifetime_budget)
            with self.ledgers.session(fresh) as ledger:
                delta, num_examples, metrics = fit_or_replay(
                    self.ledgers.replies,
                    ledger,
                    run=run,
                    server_round=int(settings["server_round"]),
                    received=parameters,
                    train=lambda: fit(
                        self.config,
                        self.runtime,
                        self.data,
                        local,
                        ledger=ledger,
                        run=run,
                        **settings,
                    ),
                    privacy_metrics=privacy_metrics,
                )
        if self.rank is not None:
            metrics["lora_rank"] = self.rank
            if protocol.SECAGG_CLIPPING_RANGE in config:  # SecAgg+ sums equal-length vectors
                from common.hetlora import pad

                delta = pad(self.runtime.spec.names, delta, global_shapes)
                del metrics["lora_rank"]
        return delta, num_examples, metrics

    def _local(self, parameters: list) -> list:
        """The global adapter as this client trains it (HetLoRA: truncated to its rank)."""
        if self.rank is None:
            return parameters
        from common.hetlora import truncate

        return truncate(self.runtime.spec.names, parameters, self.rank)

    def _frozen_mismatch(self, config: dict) -> str | None:
        """FFA-LoRA is exact only if this node's frozen A matrices equal the server's."""
        expected = config.get(protocol.FROZEN_FINGERPRINT)
        if expected is None or expected == self.runtime.frozen_fingerprint:
            return None
        return (
            "the frozen LoRA A matrices on this node differ from the server's (FFA-LoRA needs "
            "the same model, lora settings, training.seed and torch version everywhere)"
        )

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        from client.node import evaluate_adapter

        return evaluate_adapter(self.config, self.runtime, self.data, self._local(parameters))


def _round_settings(config: dict) -> dict[str, Any]:
    """What the server's fit config asks of this round."""
    secagg_range = None
    if protocol.SECAGG_CLIPPING_RANGE in config:
        secagg_range = (
            float(config[protocol.SECAGG_CLIPPING_RANGE]),
            float(config[protocol.SECAGG_MAX_WEIGHT]),
        )
    clip = config.get(KEY_CLIPPING_NORM)
    return {
        "server_round": int(config.get(protocol.SERVER_ROUND, 0)),
        "clip_update_to": None if clip is None else float(clip),
        "secagg_range": secagg_range,
    }


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

    return ClientApp(client_fn=client_fn, mods=client_mods(extra_mods))


def client_mods(extra_mods: list | None = None) -> list:
    """The ClientApp's mods, outermost first.

    Packed arrays are restored before anyone reads them (common/transport.py); the audit
    log sees exactly what leaves the node (error replies too, and SecAgg+'s masked
    vectors as narrowed); a failure anywhere inside becomes an error reply naming the
    client; SecAgg+ wraps everything after it, so extra mods (tests inject faults) see
    the plain reply.
    """
    return [unpack_mod, audit_mod, name_failures_mod, secagg_when_requested, *(extra_mods or [])]


app = make_client_app()

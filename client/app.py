"""The Flower ClientApp: reads Flower's Context, calls the plain functions in client.node.

It speaks Flower's legacy client layout (``NumPyClient``) on purpose: SecAgg+ in
flwr 1.41 exists only on that path, and using it for every run keeps secure
aggregation a switch rather than a second code path.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.node import evaluate_adapter, fit
from client.privacy import new_ledger
from client.runtime import get_client_data, get_runtime
from client.secagg import secagg_when_requested
from common import protocol
from common.config import RunConfig, from_run_config
from common.privacy.ledger import PrivacyLedger

STATE_KEY = "privatune"
PARTITION_ID_KEY = "partition-id"
NUM_PARTITIONS_KEY = "num-partitions"
DATA_PATH_KEY = "data-path"


class PrivatuneClient(NumPyClient):
    """Adapter-only client; its privacy ledger lives in the node's persistent Context."""

    def __init__(self, config: RunConfig, context: Context) -> None:
        self.config = config
        self.context = context
        node_config = context.node_config
        partition = node_config.get(PARTITION_ID_KEY)
        self.partition_id = int(partition) if partition is not None else None
        self.data_path = node_config.get(DATA_PATH_KEY)
        self.runtime = get_runtime(config)
        self.data = get_client_data(
            config,
            self.runtime,
            partition_id=self.partition_id,
            source=str(self.data_path) if self.data_path else None,
        )

    # -------------------------------------------------------------- ledger state

    def _load_ledger(self) -> PrivacyLedger | None:
        if not self.config.privacy.enabled:
            return None
        record = self.context.state.config_records.get(STATE_KEY)
        if record is not None and "ledger" in record:
            return PrivacyLedger.from_json(str(record["ledger"]))
        return new_ledger(self.config)

    def _save_ledger(self, ledger: PrivacyLedger | None) -> None:
        if ledger is not None:
            self.context.state.config_records[STATE_KEY] = ConfigRecord(
                {"ledger": ledger.to_json()}
            )

    # ------------------------------------------------------------- Flower calls

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        ledger = self._load_ledger()
        reply = fit(
            self.config,
            self.runtime,
            self.data,
            parameters,
            server_round=int(config.get(protocol.SERVER_ROUND, 0)),
            ledger=ledger,
            clip_update_to=_optional_float(config.get(KEY_CLIPPING_NORM)),
            secagg_range=_secagg_range(config),
        )
        self._save_ledger(ledger)
        return reply.delta, reply.num_examples, reply.metrics

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        return evaluate_adapter(self.config, self.runtime, self.data, parameters)


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _secagg_range(config: dict) -> tuple[float, float] | None:
    if protocol.SECAGG_CLIPPING_RANGE not in config:
        return None
    return float(config[protocol.SECAGG_CLIPPING_RANGE]), float(config[protocol.SECAGG_MAX_WEIGHT])


def make_client_app(config: RunConfig | None = None, extra_mods: list | None = None) -> ClientApp:
    """A ClientApp for ``config``, or one that reads ``context.run_config`` (flwr run)."""

    def client_fn(context: Context) -> Client:
        run_config = config if config is not None else from_run_config(context.run_config)
        partitions = context.node_config.get(NUM_PARTITIONS_KEY)
        if partitions is not None and int(partitions) != run_config.federation.num_clients:
            # `flwr run` decides the number of virtual nodes; partition the data for them.
            federation = run_config.federation.model_copy(update={"num_clients": int(partitions)})
            run_config = run_config.model_copy(update={"federation": federation})
        return PrivatuneClient(run_config, context).to_client()

    # Mods run outermost first: SecAgg+ wraps everything after it, so any extra mod (tests
    # use one to inject faults) sees the plain reply before it is masked.
    return ClientApp(client_fn=client_fn, mods=[secagg_when_requested, *(extra_mods or [])])


app = make_client_app()

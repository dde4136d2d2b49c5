"""The client of one round: ``PrivatuneClient`` (Flower's legacy ``NumPyClient``).

One instance answers one message, in the ClientApp process (simulation, or a node
without a warm worker) or in the node's warm worker (client/worker.py). On a node the
policy file decides everything privacy-related before any training; the training itself
is the plain functions of client/local_round.py.

Imports of torch and the training code stay inside the methods that need them: three of
SecAgg+'s four messages a round never train, and each starts a fresh process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.client import NumPyClient
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.node_config import NODE_CONFIG_FILE_KEY, PARTITION_ID_KEY
from common import protocol
from common.config import RunConfig
from common.errors import Refused

log = logging.getLogger("privatune.client")


class PrivatuneClient(NumPyClient):
    """Adapter-only client; its ledger lives in the Context (simulation) or a node file.

    On a node (a policy file in the node config) every privacy rule is the node's own:
    the policy decides whether it trains, at which δ it accounts, whether the request
    must have come through SecAgg+, whether it evaluates, and which rows it holds out.
    """

    def __init__(
        self, config: RunConfig, context: Context, *, ledger_dir: Path | None = None
    ) -> None:
        from client.ledger_store import LedgerStore, client_store
        from client.policy import NodePolicy, apply_policy, load_policy, split_seed, violations
        from client.runtime import get_client_data, get_runtime

        node_config = context.node_config
        self.refusal: str | None = None
        self.run = str(context.run_id)
        self.lifetime_budget: float | None = None
        self.policy: NodePolicy | None = None
        self.ledgers: LedgerStore = client_store(context, ledger_dir)
        source = split = None
        if NODE_CONFIG_FILE_KEY in node_config:
            self.policy = load_policy(str(node_config[NODE_CONFIG_FILE_KEY]))
            config = apply_policy(self.policy, config)
            self.lifetime_budget = self.policy.max_epsilon
            source = self.policy.data_path
            self.client_id = self.policy.name
            fraction = self.policy.eval_fraction if self.policy.federated_evaluation else 0.0
            split = (split_seed(self.policy), fraction)
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
            config, self.runtime, partition_id=self.partition_id, source=source, split=split
        )
        self.delta = config.privacy.delta
        if self.policy is not None:
            self.data = self.data.renamed(self.client_id)
            self.delta = self.policy.delta_for(len(self.data.train))
            problems = violations(self.policy, config, num_examples=len(self.data.train))
            if config.model.task == "sequence-classification" and not config.data.labels:
                problems.append(
                    "the run config must list data.labels: every node maps labels to the same "
                    "ids, and a node sees only its own rows"
                )
            self.refusal = "; ".join(problems) if problems else None

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        from client.local_round import fit, privacy_metrics, refuse
        from client.privacy import new_ledger
        from client.replay import fit_or_replay, question
        from client.secagg import current_session

        session = current_session()
        refusal = self.refusal or self._frozen_mismatch(config) or self._not_secure(session)
        if refusal is not None:
            if session is not None:  # nothing of this node may enter the secure sum
                raise Refused(refusal)
            reply = refuse(self.data, parameters, refusal)
            return reply.delta, reply.num_examples, reply.metrics
        settings = _round_settings(config)
        asked = question(config, parameters, run_id=self.run)
        global_shapes = [p.shape for p in parameters]
        local = self._local(parameters)
        if not self.config.privacy.enabled:  # no ledger to open, nothing to compose
            reply = fit(
                self.config, self.runtime, self.data, local, ledger=None, run=asked.run, **settings
            )
            delta, num_examples, metrics = reply.delta, reply.num_examples, reply.metrics
        else:
            fresh = new_ledger(self.config, lifetime_budget=self.lifetime_budget, delta=self.delta)
            with self.ledgers.session(fresh) as ledger:
                delta, num_examples, metrics = fit_or_replay(
                    self.ledgers.replies,
                    ledger,
                    asked=asked,
                    participants=None if session is None else session.participants,
                    train=lambda: fit(
                        self.config,
                        self.runtime,
                        self.data,
                        local,
                        ledger=ledger,
                        run=asked.run,
                        reply_key=asked.key,
                        **settings,
                    ),
                    privacy_metrics=lambda led: privacy_metrics(led, run=asked.run),
                )
        if session is not None and metrics.get("refused"):
            # A budget refusal inside a secure round: withdraw instead of sending zeros,
            # which would make the sum the other nodes' alone.
            raise Refused(str(metrics.get("refusal")))
        if self.rank is not None:
            metrics["lora_rank"] = self.rank
            if protocol.SECAGG_CLIPPING_RANGE in config:  # SecAgg+ sums equal-length vectors
                from common.hetlora import pad

                delta = pad(self.runtime.spec.names, delta, global_shapes)
                del metrics["lora_rank"]
        return delta, num_examples, metrics

    def _not_secure(self, session: object) -> str | None:
        """A node that requires SecAgg+ trains only for requests that came through it."""
        if self.policy is None or not self.policy.require_secure_aggregation or session:
            return None
        return (
            "this node requires secure aggregation and this training request did not arrive "
            "through the SecAgg+ protocol"
        )

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
        """Federated evaluation, which a node answers only if its policy allows it."""
        from client.local_round import evaluate_adapter

        if self.policy is not None:
            why = self.refusal or (
                None
                if self.policy.federated_evaluation
                else "this node does not answer federated evaluation (policy "
                "federated-evaluation = false)"
            )
            if why is not None:
                log.warning("client %s refuses to evaluate: %s", self.data.client_id, why)
                return 0.0, 0, {"client_id": self.data.client_id, "refused": True, "refusal": why}
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

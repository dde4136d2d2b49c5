"""FedAvg on adapter deltas: the global adapter moves by the example-weighted mean delta.

(How it moves is the server optimiser's business: plain addition for FedAvg, or FedAvgM,
FedAdam, FedYogi, FedAdagrad from server_opt.py.)

Clients send ``trained - received``; the server validates every update (names, shapes,
finite values), averages the valid ones weighted by ``num_examples`` and adds the mean
to the global adapter. Refusals (a client at its privacy budget) carry weight 0 and are
recorded, not averaged. Under SecAgg+ the workflow hands this strategy one already
summed result, and the same code applies it. With central DP (server/central_dp.py)
clients are Poisson-sampled and the mean is its noisy fixed-denominator sum instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from common import protocol
from common.adapters import AdapterSpec, check_arrays
from common.errors import PrivatuneError, UpdateRejected
from common.privacy.ledger import PrivacyLedger
from common.text_metrics import GenerationScores
from server.central_dp import CentralDP
from server.exchange import Fault
from server.strategy.server_opt import FedAvgOpt, ServerOptimizer

log = logging.getLogger("privatune.server")

RoundRecord = dict[str, Any]


def weighted_mean(updates: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    """Σ wᵢ·uᵢ / Σ wᵢ, array by array, in float64 then cast back to float32."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weighted mean of updates whose weights sum to zero")
    out = []
    for layer in zip(*updates, strict=True):
        acc = np.zeros(layer[0].shape, dtype=np.float64)
        for array, w in zip(layer, weights, strict=True):
            acc += w * np.asarray(array, dtype=np.float64)
        out.append((acc / total).astype(np.float32))
    return out


def pool_generation(client_metrics: list[dict[str, Scalar]]) -> GenerationScores | None:
    """Every client's generation statistics summed: the scores of all their answers as
    one corpus (exact, unlike a mean of per-client BLEU)."""
    parts = [GenerationScores.from_scalars(m) for m in client_metrics]
    usable = [p for p in parts if p is not None and p.examples > 0]
    if not usable:
        return None
    return sum(usable[1:], usable[0])


def parameters_nbytes(parameters: Parameters) -> int:
    return int(sum(len(t) for t in parameters.tensors))


NPY_HEADER_BYTES = 1024  # a .npy header is 128 bytes for any adapter shape; generous


def largest_valid_update(spec: AdapterSpec) -> int:
    """The most bytes a valid update can take: every value float64, plus .npy headers."""
    return 8 * spec.num_params + NPY_HEADER_BYTES * len(spec.names)


class DeltaFedAvg(FedAvg):
    """Flower's FedAvg, changed to aggregate deltas and keep the global adapter."""

    def __init__(
        self,
        *,
        spec: AdapterSpec,
        initial: list[np.ndarray],
        clients_per_round: int,
        min_clients: int,
        evaluate_clients: int = 0,
        central_eval: Callable[[int, list[np.ndarray]], tuple[float, dict[str, Scalar]] | None]
        | None = None,
        max_update_norm: float | None = None,
        max_update_bytes: int | None = None,
        fixed_weight: bool = False,
        wait_for_clients: float = 300.0,
        extra_fit_config: dict[str, Scalar] | None = None,
        server_optimizer: ServerOptimizer | None = None,
        central_dp: CentralDP | None = None,
    ) -> None:
        fit_config: dict[str, Scalar] = dict(extra_fit_config or {})
        if central_dp is not None:
            fit_config.update(central_dp.fit_config())
        super().__init__(
            fraction_fit=0.0,
            fraction_evaluate=1e-9 if evaluate_clients else 0.0,
            min_fit_clients=clients_per_round,
            min_evaluate_clients=max(evaluate_clients, 1),
            min_available_clients=clients_per_round,
            initial_parameters=ndarrays_to_parameters(initial),
            on_fit_config_fn=lambda rnd: {protocol.SERVER_ROUND: rnd, **fit_config},
            on_evaluate_config_fn=lambda rnd: {protocol.SERVER_ROUND: rnd},
            accept_failures=True,
        )
        self.spec = spec
        self.global_arrays = [np.asarray(a, dtype=np.float32) for a in initial]
        self.min_clients = min_clients
        self.central_eval = central_eval
        self.max_update_norm = max_update_norm
        self.max_update_bytes = max_update_bytes or largest_valid_update(spec)
        self.fixed_weight = fixed_weight
        self.wait_for_clients = wait_for_clients
        self.server_optimizer = server_optimizer or FedAvgOpt()
        self.central_dp = central_dp
        self.records: dict[int, RoundRecord] = {}
        self.names: dict[int, str] = {}  # node id -> the client id it reported

    def record(self, server_round: int) -> RoundRecord:
        return self.records.setdefault(server_round, {"round": server_round})

    # ---------------------------------------------- faults (server/exchange.py)

    def client_name(self, node_id: int) -> str | None:
        return self.names.get(node_id)

    def add_faults(self, server_round: int, faults: list[Fault]) -> None:
        if faults:
            self.record(server_round).setdefault("faults", []).extend(f.to_dict() for f in faults)

    def timed_out(self, server_round: int) -> set[int]:
        """Nodes that let this round's fit time out (server/exchange.py skips them)."""
        faults = self.record(server_round).get("faults", [])
        return {int(f["node_id"]) for f in faults if f["kind"] == "timeout"}

    def _learn_names(self, results: list[tuple[ClientProxy, Any]]) -> None:
        for proxy, res in results:
            cid = res.metrics.get("client_id")
            if cid is not None and proxy is not None:
                self.names[proxy.node_id] = str(cid)

    # ----------------------------------------------------------------- fit

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        needed = self.min_available_clients
        if not client_manager.wait_for(needed, timeout=int(self.wait_for_clients)):
            raise PrivatuneError(
                f"round {server_round}: only {client_manager.num_available()} of {needed} "
                f"clients connected within {self.wait_for_clients:.0f} s; start more client "
                "nodes, or lower federation.clients-per-round (or raise "
                "federation.wait-for-clients)"
            )
        # The workflow's parameters are authoritative.
        self.global_arrays = parameters_to_ndarrays(parameters)
        record = self.record(server_round)
        if self.central_dp is None:
            instructions = super().configure_fit(server_round, parameters, client_manager)
        else:
            population = [client_manager.all()[cid] for cid in sorted(client_manager.all())]
            chosen, q = self.central_dp.sample(population)
            assert self.on_fit_config_fn is not None
            fit_ins = FitIns(parameters, self.on_fit_config_fn(server_round))
            instructions = [(client, fit_ins) for client in chosen]
            record.update(central_dp_sample_rate=q, population=len(population))
        record["num_sampled"] = len(instructions)
        record["downlink_bytes"] = parameters_nbytes(parameters) * len(instructions)
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        record = self.record(server_round)
        self._learn_names(results)
        record["update_bytes"] = sum(parameters_nbytes(res.parameters) for _, res in results)
        accepted, refused, rejected = self._sort_results(server_round, results)
        if refused:  # named as under SecAgg+ (server/secagg.py): "client X: reason"
            record["refusals"] = sorted(
                {f"client {m.get('client_id', '?')}: {m.get('refusal', '')}" for m in refused}
            )
        if rejected:
            record["rejections"] = rejected  # client and reason, for metrics.jsonl
        record.update(
            num_clients=len(accepted),
            num_refused=len(refused),
            num_rejected=len(rejected),
            num_failures=len(failures) + len(rejected),
        )
        self._record_client_metrics(record, results)
        if self.central_dp is None and len(accepted) < self.min_clients:
            record["failed"] = True
            record["error"] = (
                f"only {len(accepted)} usable updates, federation.min-clients is {self.min_clients}"
            )
            if refused:
                record["error"] += "; refused: " + "; ".join(record["refusals"])
            if len(refused) < len(results) or not results:  # all refused: said once, later
                log.error(
                    "round %s: %s; the global adapter is unchanged", server_round, record["error"]
                )
            return None, {}
        weights = [1.0 if self.fixed_weight else float(n) for _, n, _ in accepted]
        record["weights"] = [float(n) for _, n, _ in accepted]
        if self.central_dp is not None:  # every round releases, whatever arrived
            shapes = [a.shape for a in self.global_arrays]
            mean_delta = self.central_dp.noisy_mean([d for d, _, _ in accepted], shapes)
        else:
            mean_delta = weighted_mean([d for d, _, _ in accepted], weights)
        self.global_arrays = self.server_optimizer.step(self.global_arrays, mean_delta)
        losses = [(m.get("train_loss"), n) for _, n, m in accepted]
        usable = [(float(v), n) for v, n in losses if isinstance(v, int | float) and np.isfinite(v)]
        if usable:
            record["train_loss"] = float(
                sum(v * n for v, n in usable) / max(sum(n for _, n in usable), 1)
            )
        record["failed"] = False
        return ndarrays_to_parameters(self.global_arrays), {}

    def _sort_results(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[tuple[list[np.ndarray], int, dict]], list[dict], list[dict]]:
        accepted, refused, rejected = [], [], []
        for proxy, res in results:
            metrics = dict(res.metrics)
            who = f"client {metrics.get('client_id', '?')}"
            if metrics.get("refused"):
                refused.append(metrics)
                log.warning("round %s: %s refused: %s", server_round, who, metrics.get("refusal"))
                continue
            try:
                arrays = self._validated(res, metrics, who)
            except UpdateRejected as exc:
                log.error("round %s: update rejected: %s", server_round, exc)
                rejected.append(
                    {"client_id": str(metrics.get("client_id", "?")), "reason": str(exc)}
                )
                cid = metrics.get("client_id")
                fault = Fault(
                    server_round, "fit", "garbage", None if cid is None else str(cid),
                    getattr(proxy, "node_id", 0), str(exc),
                )  # fmt: skip
                self.add_faults(server_round, [fault])
                continue
            accepted.append((arrays, int(res.num_examples), metrics))
        return accepted, refused, rejected

    def _validated(self, res: FitRes, metrics: dict, who: str) -> list[np.ndarray]:
        """The update's arrays, or UpdateRejected saying what is wrong with them.

        The size is checked before decoding, so an oversize message costs no memory
        beyond what arrived; a payload numpy cannot read is a rejection, not a crash.
        """
        size = parameters_nbytes(res.parameters)
        if size > self.max_update_bytes:
            raise UpdateRejected(
                f"{who}: update is {size} bytes, more than the {self.max_update_bytes} allowed "
                "(the adapter in float64 plus headers, or federation.max-update-bytes)"
            )
        if not self.fixed_weight and res.num_examples <= 0:
            raise UpdateRejected(
                f"{who}: reports num_examples = {res.num_examples}; an update needs a positive "
                "weight"
            )
        try:
            arrays = parameters_to_ndarrays(res.parameters)
        except (ValueError, OSError, EOFError) as exc:
            raise UpdateRejected(f"{who}: update is not a list of numpy arrays ({exc})") from exc
        arrays = self.to_global_layout(arrays, metrics, who)
        check_arrays(self.spec, arrays, who=who, max_norm=self.max_update_norm)
        return arrays

    def to_global_layout(self, arrays: list[np.ndarray], metrics: dict, who: str) -> list:
        """A client's update in the global adapter's layout (HetLoRA pads; FedAvg: as sent)."""
        return arrays

    def _record_client_metrics(
        self, record: RoundRecord, results: list[tuple[ClientProxy, FitRes]]
    ) -> None:
        eps: dict[str, float] = {}
        histories: dict[str, Any] = {}
        clipped = 0
        for _, res in results:
            m = res.metrics
            cid = str(m.get("client_id", "?"))
            try:
                clipped += int(m.get("secagg_clipped_values", 0))  # type: ignore[arg-type]
                if "epsilon" in m:
                    eps[cid] = float(m["epsilon"])  # type: ignore[arg-type]
                if "privacy_history" in m:
                    history = json.loads(str(m["privacy_history"]))
                    _ = PrivacyLedger.from_dict(history).epsilon  # as the ledger book will
                    histories[cid] = history
            # A client's metrics are its own claims: a malformed one is logged, never fatal.
            except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
                log.error("client %s sent malformed privacy metrics (%s); ignored", cid, exc)
        if eps:
            record["client_epsilon"] = eps
        if histories:
            record["privacy_histories"] = histories
        if clipped:
            record["secagg_clipped_values"] = clipped

    # ------------------------------------------------------------ evaluate

    def evaluate(self, server_round: int, parameters: Parameters):  # type: ignore[no-untyped-def]
        if self.central_eval is None:
            return None
        result = self.central_eval(server_round, parameters_to_ndarrays(parameters))
        if result is not None:
            loss, metrics = result
            record = self.record(server_round)
            record["eval_loss"] = float(loss)
            record.update({f"eval_{k}": float(v) for k, v in metrics.items()})  # type: ignore[arg-type]
        return result

    def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        record = self.record(server_round)
        self._learn_names(results)
        total = sum(res.num_examples for _, res in results)
        if total > 0:
            record["fed_eval_loss"] = float(
                sum(res.loss * res.num_examples for _, res in results) / total
            )
            accs = [
                (float(res.metrics["accuracy"]), res.num_examples)  # type: ignore[arg-type]
                for _, res in results
                if "accuracy" in res.metrics
            ]
            if accs:
                record["fed_eval_accuracy"] = sum(a * n for a, n in accs) / total
            pooled = pool_generation([res.metrics for _, res in results])
            if pooled is not None:
                record.update({f"fed_eval_{k}": v for k, v in pooled.metrics().items()})
        record["fed_eval_failures"] = len(failures)
        return record.get("fed_eval_loss"), {}

"""The single seam to Flower's SecAgg+ (legacy workflow): settings, calibration, bounds.

SecAgg+ scales each client's delta by ``weight / max_weight``, clips every value to
``±clipping_range``, quantises it to ``2^bits`` levels and masks it; the server unmasks
only the sum. Calibration picks ``max_weight`` and ``clipping_range`` from the config so
that no value is clipped (and clients report any value that would be), and
:func:`quantization_error_bound` states how far the secure mean can be from the plain one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from common.config import RunConfig
from common.errors import ConfigError
from common.protocol import failed_client, refusal
from common.secagg_wire import widen_reply
from server.traffic import CountingGrid

# Adam's bias-corrected step is at most lr·(1-β1)/sqrt(1-β2) per coordinate (≈3.16·lr).
ADAM_STEP_BOUND = 0.1 / (1 - 0.999) ** 0.5
SAFETY = 2.0
FALLBACK_CLIPPING_RANGE = 8.0  # Flower's default, when no bound follows from the config

# Strategies that need each client's own update cannot run under secure aggregation.
NEEDS_INDIVIDUAL_UPDATES: frozenset[str] = frozenset({"krum", "median", "trimmed-mean", "flora"})


@dataclass(frozen=True)
class SecAggSettings:
    """What the SecAgg+ workflow is built with for this run."""

    num_shares: float | int
    reconstruction_threshold: float | int
    max_weight: float
    clipping_range: float
    quantization_range: int


def delta_bound(config: RunConfig) -> float | None:
    """An upper bound on any single value of a client's delta, when the config implies one."""
    training = config.training
    if training.optimizer == "adam":
        return ADAM_STEP_BOUND * training.lr * training.local_steps
    return None


def check_compatible(config: RunConfig) -> None:
    """Refuse features that need individual client updates when secure aggregation is on."""
    if not config.secure_aggregation.enabled:
        return
    if config.federation.strategy in NEEDS_INDIVIDUAL_UPDATES:
        raise ConfigError(
            [
                f"federation.strategy = {config.federation.strategy!r} needs each client's "
                "own update, which secure aggregation hides; choose fedavg or turn "
                "secure-aggregation.enabled off"
            ]
        )
    if config.federation.clients_per_round < 2:
        raise ConfigError(
            ["secure aggregation needs federation.clients-per-round ≥ 2 (it hides one in many)"]
        )


def _as_share_count(value: float) -> float | int:
    """Config floats ≤ 1 are fractions (Flower's float form); larger ones are counts."""
    return value if value <= 1 else int(round(value))


def calibrate(config: RunConfig, *, largest_client: int | None) -> SecAggSettings:
    """SecAgg+ settings for this run; ``largest_client`` is the biggest train split, if known."""
    check_compatible(config)
    sa = config.secure_aggregation
    if config.equal_weights:
        max_weight = 1.0
    elif sa.max_weight is not None:
        max_weight = sa.max_weight
    elif largest_client is not None:
        max_weight = float(largest_client)
    else:
        raise ConfigError(
            [
                "secure-aggregation.max-weight: set it to the largest number of training "
                "examples any client holds, or set secure-aggregation.fixed-weight = true"
            ]
        )
    if sa.clipping_range is not None:
        clipping = sa.clipping_range
    else:
        bound = delta_bound(config)
        clipping = FALLBACK_CLIPPING_RANGE if bound is None else max(SAFETY * bound, 1e-4)
    return SecAggSettings(
        num_shares=_as_share_count(sa.num_shares),
        reconstruction_threshold=_as_share_count(sa.reconstruction_threshold),
        max_weight=max_weight,
        clipping_range=clipping,
        quantization_range=2**sa.quantization_bits,
    )


def workflow(settings: SecAggSettings, *, timeout: float | None) -> SecAggPlusWorkflow:
    return SecAggPlusWorkflow(
        num_shares=settings.num_shares,
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=settings.max_weight,
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
        timeout=timeout,
    )


class WideningGrid(CountingGrid):
    """The grid SecAgg+ runs on: counts each reply as it arrived, then widens its masked
    vectors back to int64 (clients send them narrowed, common/secagg_wire.py).

    Every reply passes ``pull_messages`` (``send_and_receive`` pulls through it), so this
    is the one place replies arrive; Flower's workflow then sums exactly the int64 arrays
    its own client mod built.
    """

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.refusals: list[str] = []

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(super().pull_messages(message_ids))
        for reply in replies:
            # Under SecAgg+ a node that refuses withdraws with an error reply saying so
            # (a zero update would make the sum the others' alone): count it as a refusal.
            reason = str(reply.error.reason) if reply.has_error() else ""
            if (what := refusal(reason)) is not None:
                self.refusals.append(f"client {failed_client(reason)}: {what}")
        return [widen_reply(m) for m in replies]

    def take_refusals(self) -> list[str]:
        """What nodes refused since the last call (their reasons)."""
        taken, self.refusals = self.refusals, []
        return taken


def quantization_error_bound(settings: SecAggSettings, weights: list[float]) -> float:
    """Largest per-value gap between the secure weighted mean and the plain one.

    Each client's scaled value is stochastically rounded to a grid of step 2R/Q, so the
    unmasked sum is off by less than n·2R/Q, and the mean divides that by Σ wᵢ/W. (The
    weights are themselves quantised, which adds a relative error ≤ 1/(2·Q·wᵢ/W), far
    smaller for the weights used here.)
    """
    total = sum(weights) / settings.max_weight
    if total <= 0:
        return float("inf")
    step = 2 * settings.clipping_range / settings.quantization_range
    return len(weights) * step / total


def count_refusals(record: dict, refusals: list[str]) -> None:
    """Under SecAgg+ refusals arrive as error replies: count them as refused, not failed.

    (A refusal in the masked-vector stage also reaches the strategy as a failure when the
    round completes; it is moved from one count to the other.)
    """
    if not refusals:
        return
    record["num_refused"] = record.get("num_refused", 0) + len(refusals)
    record["refusals"] = sorted({*record.get("refusals", []), *refusals})
    if "num_failures" in record:
        record["num_failures"] = max(0, record["num_failures"] - len(refusals))

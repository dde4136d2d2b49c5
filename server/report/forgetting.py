"""The forgetting check: the general held-out set's metrics before and after training.

``forgetting.json`` (written by the server when ``data.general-eval`` is set) holds the
metrics of the untrained adapter (round 0) and of the final adapter. The table puts them
side by side with the change and says, per metric, whether the change is a loss of
ability; lower is better for loss and perplexity, higher for every other metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.report.format import fmt_float
from server.report.inputs import FORGETTING_FILE, RunData

# Shown first, in this order; other numeric metrics follow alphabetically.
_ORDER = ("loss", "perplexity", "rouge_l", "bleu", "exact_match", "accuracy", "macro_f1")
_LABELS = {
    "loss": "loss",
    "perplexity": "perplexity",
    "rouge_l": "ROUGE-L F",
    "bleu": "BLEU (0-100)",
    "exact_match": "exact match",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
}
_LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
_NOT_METRICS = frozenset({"num_examples", "generated"})
CHANGE_TOLERANCE = 1e-9  # a change below this is "unchanged", not noise dressed as a verdict


@dataclass(frozen=True)
class ForgettingRow:
    metric: str
    before: float | None
    after: float | None

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def verdict(self) -> str:
        change = self.change
        if change is None:
            return "—"
        if abs(change) <= CHANGE_TOLERANCE:
            return "unchanged"
        better = change < 0 if self.metric in _LOWER_IS_BETTER else change > 0
        return "better" if better else "worse"


def configured_general_eval(config: Mapping[str, Any] | None) -> str | None:
    """``data.general-eval`` from the resolved config, if the run asked for the check."""
    data = (config or {}).get("data")
    value = (
        data.get("general-eval", data.get("general_eval")) if isinstance(data, Mapping) else None
    )
    return value if isinstance(value, str) and value else None


def forgetting_rows(forgetting: Mapping[str, Any]) -> list[ForgettingRow]:
    before: Mapping[str, float] = forgetting.get("before") or {}
    after: Mapping[str, float] = forgetting.get("after") or {}
    keys = (set(before) | set(after)) - _NOT_METRICS
    ordered = [k for k in _ORDER if k in keys] + sorted(keys - set(_ORDER))
    return [ForgettingRow(k, before.get(k), after.get(k)) for k in ordered]


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    spec = ".2f" if metric == "bleu" else ".4g" if metric == "perplexity" else ".4f"
    return fmt_float(value, spec)


def forgetting_cells(row: ForgettingRow) -> list[str]:
    change = row.change
    signed = "—" if change is None else ("+" if change >= 0 else "") + _fmt(row.metric, change)
    return [
        _LABELS.get(row.metric, row.metric.replace("_", " ")),
        _fmt(row.metric, row.before),
        _fmt(row.metric, row.after),
        signed,
        row.verdict,
    ]


HEADERS = ("metric", "before", "after", "change", "after vs before")


def forgetting_caption(data: RunData) -> str | None:
    """The sentence above the table; None when the check was neither run nor configured."""
    forgetting = data.forgetting
    spec = configured_general_eval(data.config)
    if forgetting is None:
        if spec is None:
            return None
        return (
            f"data.general-eval = {spec!r} was configured, but the run left no "
            f"{FORGETTING_FILE}: it is written when the last round ends, so the run did not "
            "finish."
        )
    name = forgetting.get("general_eval") or spec or "?"
    after = forgetting.get("after_round", "?")
    return (
        f"General held-out set {name!r}: the untrained adapter (round "
        f"{forgetting.get('before_round', 0)}) against the final adapter (round {after}). "
        "'worse' on this set is ability the fine-tuning cost."
    )

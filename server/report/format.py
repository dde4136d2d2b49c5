"""Plain-text formatting of metric values for the report's tables (escaped by the caller)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

MAX_ERROR_CHARS = 500  # a traceback in one table cell would swamp the table


def fmt_float(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else str(value)


def _fmt_bytes(value: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:,.0f} B"


def fmt_percent(value: float) -> str:
    return fmt_float(value * 100.0, ".2f") + "%"


def _fmt_client_epsilon(value: Mapping[str, float]) -> str:
    """A few clients are listed; many are summarised so the cell stays one line."""
    if len(value) <= 3:
        items = sorted(value.items(), key=lambda item: natural_key(item[0]))
        return ", ".join(f"{cid}: {fmt_float(eps, '.3f')}" for cid, eps in items)
    return f"{len(value)} clients, max {fmt_float(max(value.values()), '.3f')}"


def _fmt_error(value: str) -> str:
    return value if len(value) <= MAX_ERROR_CHARS else value[:MAX_ERROR_CHARS] + "…"


def _fmt_generic(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return fmt_float(value, ",.1f" if abs(value) >= 1000 else ".4g")
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "uplink_bytes": _fmt_bytes,
    "downlink_bytes": _fmt_bytes,
    "eval_accuracy": fmt_percent,
    "fed_eval_accuracy": fmt_percent,
    "eval_macro_f1": lambda v: fmt_float(v, ".4f"),
    "train_loss": lambda v: fmt_float(v, ".4f"),
    "eval_loss": lambda v: fmt_float(v, ".4f"),
    "fed_eval_loss": lambda v: fmt_float(v, ".4f"),
    **{
        f"{side}_{metric}": (lambda v: fmt_float(v, ".4f"))
        for side in ("eval", "fed_eval")
        for metric in ("rouge_l", "exact_match", "perplexity")
    },
    "eval_bleu": lambda v: fmt_float(v, ".2f"),
    "fed_eval_bleu": lambda v: fmt_float(v, ".2f"),
    "epsilon_max": lambda v: fmt_float(v, ".3f"),
    "round_seconds": lambda v: fmt_float(v, ".1f") + " s",
    "client_epsilon": _fmt_client_epsilon,
    "error": _fmt_error,
    # server/exchange.py: one entry per client dropped from the round
    "faults": lambda v: "; ".join(
        f"client {f.get('client_id')}: {f.get('kind')}" for f in v if isinstance(f, dict)
    ),
}


def format_value(key: str, value: object) -> str:
    """Plain text for one metric; the caller escapes it."""
    formatter = _FORMATTERS.get(key)
    if formatter is None or value is None or isinstance(value, bool):
        return _fmt_generic(value)
    try:
        return formatter(value)
    except (TypeError, ValueError):  # summary.json is free-form: a key may hold anything
        return _fmt_generic(value)


def natural_key(text: str) -> tuple[int, int | str]:
    """Client "10" after client "9", not after "1"."""
    return (0, int(text)) if text.isdigit() else (1, text)

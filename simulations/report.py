"""Turn a finished (or crashed) run's output folder into a static HTML report.

The report is what a person looks at after a run, often on a machine without the
training stack, so it only needs matplotlib and the files the run left behind:
``metrics.jsonl`` (one line per round), ``privacy_ledger.json``, ``config.resolved.toml``
and ``summary.json``. Everything except the metrics is optional, and a bad metrics line
is skipped and listed in the report rather than aborting it: a report of a broken run
is exactly when a report is most needed.

Every file is written to a temporary name in the same folder and then moved into
place with :func:`os.replace`, so a crash (or a second report being written at the same
time) never leaves a half-written PNG or HTML page. The HTML is written last, so a
``report.html`` on disk always has its plots beside it.

Regenerate a report with ``python -m simulations.report OUTPUT_DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import logging
import math
import os
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

# The Agg canvas is attached to each figure explicitly instead of calling
# ``matplotlib.use("Agg")``: that way importing this module never changes the backend
# of a host process (a notebook, a test session) and no display is ever needed.
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = ["REPORT_FILE", "main", "write_report"]

log = logging.getLogger(__name__)

Series = tuple[list[int], list[float]]  # (rounds, values) of one metric

METRICS_FILE = "metrics.jsonl"
LEDGER_FILE = "privacy_ledger.json"
CONFIG_FILE = "config.resolved.toml"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"

DPI = 110
FIGSIZE = (7.5, 4.2)
MAX_CLIENT_LINES = 20  # beyond this a per-client ε plot is unreadable spaghetti
MAX_PROBLEMS_SHOWN = 50  # a file of bad lines must not bury the report under its list
MAX_ERROR_CHARS = 500  # a traceback in one table cell would swamp the table

_NUMERIC_KEYS = (
    "train_loss",
    "num_clients",
    "num_failures",
    "num_refused",
    "uplink_bytes",
    "downlink_bytes",
    "eval_loss",
    "eval_accuracy",
    "eval_macro_f1",
    "fed_eval_loss",
    "fed_eval_accuracy",
    "epsilon_max",
    "round_seconds",
)
_BOOL_KEYS = ("secagg", "failed")

# Known columns first, in the order a reader scans a round: what trained, how well,
# what it cost, how private. Unknown keys follow alphabetically so nothing is hidden.
_COLUMN_ORDER = (
    "round",
    "failed",
    "num_clients",
    "num_failures",
    "num_refused",
    "faults",
    "train_loss",
    "eval_loss",
    "eval_accuracy",
    "eval_macro_f1",
    "fed_eval_loss",
    "fed_eval_accuracy",
    "uplink_bytes",
    "downlink_bytes",
    "epsilon_max",
    "client_epsilon",
    "secagg",
    "round_seconds",
    "error",
)
_COLUMN_LABELS = {
    "num_clients": "clients aggregated",
    "num_failures": "clients failed",
    "num_refused": "clients refused",
    "eval_accuracy": "eval accuracy",
    "eval_macro_f1": "eval macro-F1",
    "fed_eval_loss": "fed. eval loss",
    "fed_eval_accuracy": "fed. eval accuracy",
    "uplink_bytes": "uplink",
    "downlink_bytes": "downlink",
    "epsilon_max": "ε max",
    "client_epsilon": "client ε",
    "round_seconds": "duration",
}


# --------------------------------------------------------------------------- inputs


@dataclass
class RunData:
    """Everything read from one output folder, plus the problems met reading it.

    ``problems`` are shown in the report as well as logged, because the person reading
    the report is usually not the one who saw the console.
    """

    rounds: list[dict[str, Any]]
    ledger: dict[str, Any] | None = None
    config_text: str | None = None
    config: dict[str, Any] | None = None
    summary: object = None
    problems: list[str] = field(default_factory=list)


def _note(problems: list[str], message: str) -> None:
    log.warning("%s", message)
    problems.append(message)


def _is_number(value: object) -> TypeGuard[int | float]:
    """JSON numbers only: ``True`` is an int to Python but never a metric value."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clean_record(record: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Drop values of the wrong type so one odd field does not cost the whole round."""
    clean = dict(record)
    for key in _NUMERIC_KEYS:
        if key in clean and not _is_number(clean[key]):
            _note(problems, f"{where}: '{key}' is not a number ({clean.pop(key)!r}); ignored")
    for key in _BOOL_KEYS:
        if key in clean and not isinstance(clean[key], bool):
            _note(problems, f"{where}: '{key}' is not true/false ({clean.pop(key)!r}); ignored")
    if "client_epsilon" in clean:
        clean["client_epsilon"] = _clean_client_epsilon(clean["client_epsilon"], where, problems)
        if not clean["client_epsilon"]:
            del clean["client_epsilon"]
    if "error" in clean and clean["error"] is not None:
        clean["error"] = str(clean["error"])
    return clean


def _clean_client_epsilon(value: object, where: str, problems: list[str]) -> dict[str, float]:
    if not isinstance(value, Mapping):
        _note(problems, f"{where}: 'client_epsilon' is not an object; ignored")
        return {}
    good = {str(cid): float(eps) for cid, eps in value.items() if _is_number(eps)}
    if len(good) != len(value):
        _note(problems, f"{where}: non-numeric ε for some clients in 'client_epsilon'; ignored")
    return good


def _parse_metric_line(
    line: str, lineno: int, path: Path, problems: list[str]
) -> dict[str, Any] | None:
    """One round's record, or None (with a note naming the line) if it is unusable."""
    where = f"{path.name} line {lineno}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        _note(problems, f"{where}: not valid JSON ({exc.msg}); line skipped")
        return None
    if not isinstance(record, dict):
        _note(problems, f"{where}: not a JSON object; line skipped")
        return None
    rnd = record.get("round")
    if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0:
        _note(problems, f"{where}: no valid 'round' number ({rnd!r}); line skipped")
        return None
    return _clean_record(record, where, problems)


def load_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Rounds in round order; a round logged twice (a resumed run) keeps its last line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file not found; the run produced no rounds")
    by_round: dict[int, dict[str, Any]] = {}
    # errors="replace": a corrupt byte makes one line malformed instead of the whole file.
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            record = _parse_metric_line(line, lineno, path, problems)
            if record is None:
                continue
            if record["round"] in by_round:
                where = f"{path.name} line {lineno}"
                _note(problems, f"{where}: round {record['round']} logged again; this line used")
            by_round[record["round"]] = record
    if not by_round:
        raise ValueError(f"{path}: no usable metric lines; the run produced no rounds")
    return [by_round[r] for r in sorted(by_round)]


def _load_json(path: Path, problems: list[str]) -> object:
    """Parsed JSON, or None if the file is absent (normal) or unreadable (noted)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _note(problems, f"{path.name}: unreadable ({exc}); section left out")
        return None


def _load_ledger(path: Path, problems: list[str]) -> dict[str, Any] | None:
    ledger = _load_json(path, problems)
    if ledger is None:
        return None
    if not isinstance(ledger, dict) or not isinstance(ledger.get("clients", {}), dict):
        _note(problems, f"{path.name}: not a privacy ledger (expected a 'clients' object)")
        return None
    return ledger


def _load_config(path: Path, problems: list[str]) -> tuple[str | None, dict[str, Any] | None]:
    """Raw text (shown verbatim, comments and all) and the parsed table (for look-ups)."""
    if not path.is_file():
        return None, None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        _note(problems, f"{path.name}: unreadable ({exc})")
        return None, None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _note(problems, f"{path.name}: not valid TOML ({exc}); shown as is")
        return text, None


def _ledger_clients(ledger: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    clients = (ledger or {}).get("clients")
    if not isinstance(clients, Mapping):
        return {}
    return {str(cid): entry for cid, entry in clients.items() if isinstance(entry, Mapping)}


def load_run(output_dir: Path) -> RunData:
    """Read every input of the report; only a missing or empty metrics file is fatal."""
    problems: list[str] = []
    rounds = load_metrics(output_dir / METRICS_FILE, problems)
    ledger = _load_ledger(output_dir / LEDGER_FILE, problems)
    config_text, config = _load_config(output_dir / CONFIG_FILE, problems)
    summary = _load_json(output_dir / SUMMARY_FILE, problems)
    return RunData(rounds, ledger, config_text, config, summary, problems)


# ------------------------------------------------------------------------- headline


@dataclass(frozen=True)
class Headline:
    """The few figures that say whether the run worked, computed once for the page."""

    rounds_completed: int
    rounds_run: int
    failed_rounds: list[int]
    accuracy_key: str | None
    final_round: int | None
    final_accuracy: float | None
    baseline_accuracy: float | None
    epsilon_max: float | None
    delta: float | None
    dp_ran: bool
    secagg: bool | None


def _series(rounds: Sequence[Mapping[str, Any]], key: str) -> Series:
    """(rounds, values) for the rounds that have a numeric ``key``."""
    pairs = [(r["round"], float(r[key])) for r in rounds if _is_number(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _accuracy_key(rounds: Sequence[Mapping[str, Any]]) -> str | None:
    """Server-side accuracy when the run has it; else the clients' federated accuracy."""
    for key in ("eval_accuracy", "fed_eval_accuracy"):
        if any(r["round"] > 0 and _is_number(r.get(key)) for r in rounds):
            return key
    return None


def _baseline(rounds: Sequence[Mapping[str, Any]], key: str | None) -> float | None:
    """Round 0 is the untrained adapter: the bar training has to clear."""
    if key is None:
        return None
    zero = next((r for r in rounds if r["round"] == 0), None)
    return float(zero[key]) if zero is not None and _is_number(zero.get(key)) else None


def _ledger_delta(ledger: Mapping[str, Any] | None) -> float | None:
    if ledger is None:
        return None
    delta = ledger.get("delta")
    if _is_number(delta):
        return float(delta)
    deltas = [c.get("delta") for c in _ledger_clients(ledger).values()]
    return max((float(d) for d in deltas if _is_number(d)), default=None)


def _final_epsilon(
    rounds: Sequence[Mapping[str, Any]], ledger: Mapping[str, Any] | None
) -> float | None:
    """The latest ε max logged; the ledger's largest ε when the metrics lack it."""
    _, values = _series(rounds, "epsilon_max")
    if values:
        return values[-1]
    epsilons = [c.get("epsilon") for c in _ledger_clients(ledger).values()]
    return max((float(e) for e in epsilons if _is_number(e)), default=None)


def _config_flag(config: Mapping[str, Any] | None, section: str) -> bool | None:
    """``[section] enabled`` from the resolved config, in kebab- or snake-case."""
    if config is None:
        return None
    table = config.get(section) or config.get(section.replace("-", "_"))
    value = table.get("enabled") if isinstance(table, Mapping) else None
    return value if isinstance(value, bool) else None


def _secagg(data: RunData) -> bool | None:
    flags = [r["secagg"] for r in data.rounds if isinstance(r.get("secagg"), bool)]
    if flags:
        return flags[-1]
    return _config_flag(data.config, "secure-aggregation")


def _failed_rounds(data: RunData) -> list[int]:
    return [r["round"] for r in data.rounds if r.get("failed") is True]


def compute_headline(data: RunData) -> Headline:
    """Prefer the metrics (what happened per round), fall back to ledger and config."""
    rounds = data.rounds
    trained = [r for r in rounds if r["round"] > 0]
    failed = _failed_rounds(data)
    key = _accuracy_key(rounds)
    final_round, final_acc = None, None
    if key is not None:
        xs, ys = _series(trained, key)
        final_round, final_acc = xs[-1], ys[-1]
    epsilon = _final_epsilon(rounds, data.ledger)
    return Headline(
        rounds_completed=len(trained) - len([r for r in failed if r > 0]),
        rounds_run=len(trained),
        failed_rounds=failed,
        accuracy_key=key,
        final_round=final_round,
        final_accuracy=final_acc,
        baseline_accuracy=_baseline(rounds, key),
        epsilon_max=epsilon,
        delta=_ledger_delta(data.ledger),
        dp_ran=data.ledger is not None or epsilon is not None,
        secagg=_secagg(data),
    )


# -------------------------------------------------------------------------- plots


def _new_axes(title: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_axisbelow(True)
    return fig, ax


def _shade_failed(ax: Axes, failed_rounds: Sequence[int]) -> None:
    """Failed rounds have no values; shading them explains the gap in the lines."""
    for i, rnd in enumerate(failed_rounds):
        label = "failed round" if i == 0 else None
        ax.axvspan(rnd - 0.5, rnd + 0.5, color="tab:red", alpha=0.12, label=label)


def _plot_lines(
    ax: Axes, rounds: Sequence[Mapping[str, Any]], keys: Sequence[tuple[Any, ...]]
) -> int:
    """Plot each (key, label[, scale]) that has data; returns how many were drawn."""
    drawn = 0
    for key, label, *scale in keys:
        xs, ys = _series(rounds, key)
        if xs:
            factor = scale[0] if scale else 1.0
            ax.plot(xs, [y * factor for y in ys], marker="o", markersize=4, label=label)
            drawn += 1
    return drawn


def plot_loss(data: RunData) -> Figure | None:
    fig, ax = _new_axes("Loss per round", "loss (mean per example)")
    keys = (
        ("train_loss", "train loss (clients)"),
        ("eval_loss", "eval loss (server held-out)"),
        ("fed_eval_loss", "eval loss (clients' held-out)"),
    )
    if not _plot_lines(ax, data.rounds, keys):
        return None
    _shade_failed(ax, _failed_rounds(data))
    return fig


def plot_accuracy(data: RunData) -> Figure | None:
    fig, ax = _new_axes("Accuracy per round", "accuracy (%)")
    keys = (
        ("eval_accuracy", "eval accuracy (server held-out)", 100.0),
        ("fed_eval_accuracy", "eval accuracy (clients' held-out)", 100.0),
    )
    if not _plot_lines(ax, data.rounds, keys):
        return None
    baseline = _baseline(data.rounds, _accuracy_key(data.rounds))
    if baseline is not None:
        ax.axhline(baseline * 100.0, color="gray", linestyle="--", label="untrained adapter")
    _shade_failed(ax, _failed_rounds(data))
    return fig


def _byte_unit(largest: float) -> tuple[str, float]:
    """MB once any round moves a megabyte, so the axis never reads 0.001 or 12000."""
    return ("MB", 1e6) if largest >= 1e6 else ("KB", 1e3)


def plot_bytes(data: RunData) -> Figure | None:
    values = [r[k] for r in data.rounds for k in ("uplink_bytes", "downlink_bytes") if k in r]
    if not values:
        return None
    unit, scale = _byte_unit(max(values))
    fig, ax = _new_axes("Communication per round", f"bytes transferred ({unit})")
    keys = (
        ("uplink_bytes", "uplink (clients → server)", 1.0 / scale),
        ("downlink_bytes", "downlink (server → clients)", 1.0 / scale),
    )
    _plot_lines(ax, data.rounds, keys)
    ax.set_ylim(bottom=0)  # a zoomed axis makes a constant payload look like it swings
    _shade_failed(ax, _failed_rounds(data))
    return fig


def _client_epsilon_series(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Series]:
    series: dict[str, Series] = {}
    for record in rounds:
        for cid, eps in record.get("client_epsilon", {}).items():
            xs, ys = series.setdefault(cid, ([], []))
            xs.append(record["round"])
            ys.append(eps)
    return dict(sorted(series.items(), key=lambda item: _natural_key(item[0])))


def _client_budget(ledger: Mapping[str, Any] | None, cid: str) -> float | None:
    budget = _ledger_clients(ledger).get(cid, {}).get("budget")
    return float(budget) if _is_number(budget) else None


def _draw_client_epsilons(ax: Axes, data: RunData, series: Mapping[str, Series]) -> None:
    """One thin line per client, its budget dotted in the same colour."""
    any_budget = False
    for cid, (xs, ys) in series.items():
        (line,) = ax.plot(xs, ys, linewidth=1, alpha=0.8, label=f"client {cid}")
        budget = _client_budget(data.ledger, cid)
        if budget is not None:
            ax.axhline(budget, color=line.get_color(), linestyle=":", linewidth=1)
            any_budget = True
    if any_budget:
        ax.add_line(Line2D([], [], color="gray", linestyle=":", label="client budget"))


def _draw_shared_budgets(ax: Axes, ledger: Mapping[str, Any] | None) -> None:
    """With too many clients to draw, still show the distinct budgets they run against."""
    budgets = {_client_budget(ledger, cid) for cid in _ledger_clients(ledger)} - {None}
    for i, budget in enumerate(sorted(budgets)):
        ax.axhline(budget, color="gray", linestyle=":", label="client budget" if i == 0 else None)


def plot_epsilon(data: RunData) -> Figure | None:
    xs, ys = _series(data.rounds, "epsilon_max")
    series = _client_epsilon_series(data.rounds)
    if not xs and not series:
        return None
    delta = _ledger_delta(data.ledger)
    title = "Privacy spent per round" + (f" (δ = {delta:g})" if delta is not None else "")
    fig, ax = _new_axes(title, "ε (privacy loss; lower is more private)")
    if 0 < len(series) <= MAX_CLIENT_LINES:
        _draw_client_epsilons(ax, data, series)
    else:
        _draw_shared_budgets(ax, data.ledger)
    if xs:  # dashed and on top: it coincides with the leading client's line
        style = {"color": "black", "linestyle": "--", "marker": "o", "markersize": 4}
        ax.plot(xs, ys, linewidth=1.8, label="ε max (any client)", zorder=3, **style)
    ax.set_ylim(bottom=0)
    _shade_failed(ax, _failed_rounds(data))
    return fig


def plot_clients(data: RunData) -> Figure | None:
    keys = ("num_clients", "num_failures", "num_refused")
    rows = [r for r in data.rounds if any(_is_number(r.get(k)) for k in keys)]
    if not rows:
        return None
    fig, ax = _new_axes("Clients per round", "clients")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    xs = [r["round"] for r in rows]
    bottom = [0.0] * len(rows)
    styles = (
        ("aggregated", "tab:green"),
        ("failed", "tab:red"),
        ("refused (budget)", "tab:orange"),
    )
    for key, (label, color) in zip(keys, styles, strict=True):
        heights = [float(r[key]) if _is_number(r.get(key)) else 0.0 for r in rows]
        ax.bar(xs, heights, bottom=bottom, color=color, label=label, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    return fig


@dataclass(frozen=True)
class PlotSpec:
    filename: str
    caption: str
    build: Callable[[RunData], Figure | None]


PLOTS = (
    PlotSpec("plot_loss.png", "Training and evaluation loss", plot_loss),
    PlotSpec(
        "plot_accuracy.png", "Evaluation accuracy against the untrained adapter", plot_accuracy
    ),
    PlotSpec("plot_bytes.png", "Bytes sent per round", plot_bytes),
    PlotSpec("plot_epsilon.png", "Differential-privacy ε spent", plot_epsilon),
    PlotSpec("plot_clients.png", "Clients aggregated, failed and refused", plot_clients),
)


def _figure_png(fig: Figure) -> bytes:
    ax = fig.axes[0]
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", ncol=2 if len(handles) > 10 else 1, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def write_plots(output_dir: Path, data: RunData) -> list[PlotSpec]:
    """Write every plot that has data; returns the ones written, in page order.

    A plot without data this time is deleted if an older report left one, so the
    folder never holds a picture of data the run no longer has.
    """
    written: list[PlotSpec] = []
    for spec in PLOTS:
        target = output_dir / spec.filename
        fig = spec.build(data)
        if fig is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            continue
        atomic_write(target, _figure_png(fig))
        written.append(spec)
    return written


# --------------------------------------------------------------------- formatting


def _fmt_float(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else str(value)


def _fmt_bytes(value: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:,.0f} B"


def _fmt_percent(value: float) -> str:
    return _fmt_float(value * 100.0, ".2f") + "%"


def _fmt_client_epsilon(value: Mapping[str, float]) -> str:
    """A few clients are listed; many are summarised so the cell stays one line."""
    if len(value) <= 3:
        items = sorted(value.items(), key=lambda item: _natural_key(item[0]))
        return ", ".join(f"{cid}: {_fmt_float(eps, '.3f')}" for cid, eps in items)
    return f"{len(value)} clients, max {_fmt_float(max(value.values()), '.3f')}"


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
        return _fmt_float(value, ",.1f" if abs(value) >= 1000 else ".4g")
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "uplink_bytes": _fmt_bytes,
    "downlink_bytes": _fmt_bytes,
    "eval_accuracy": _fmt_percent,
    "fed_eval_accuracy": _fmt_percent,
    "eval_macro_f1": lambda v: _fmt_float(v, ".4f"),
    "train_loss": lambda v: _fmt_float(v, ".4f"),
    "eval_loss": lambda v: _fmt_float(v, ".4f"),
    "fed_eval_loss": lambda v: _fmt_float(v, ".4f"),
    "epsilon_max": lambda v: _fmt_float(v, ".3f"),
    "round_seconds": lambda v: _fmt_float(v, ".1f") + " s",
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


def _natural_key(text: str) -> tuple[int, int | str]:
    """Client "10" after client "9", not after "1"."""
    return (0, int(text)) if text.isdigit() else (1, text)


# --------------------------------------------------------------------------- html

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.headline { border: 2px solid #2b7a3d; border-radius: 8px; padding: .8rem 1.2rem;
            background: #f4faf5; }
.headline.has-failures { border-color: #c62828; background: #fdf3f3; }
.headline dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.2rem;
               margin: 0; }
.headline dt { font-weight: 600; } .headline dd { margin: 0; }
.bad { color: #c62828; font-weight: 700; } .good { color: #2b7a3d; font-weight: 700; }
.muted { color: #777; }
figure { display: inline-block; margin: .5rem 1rem 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #555; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right;
         vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text { text-align: left; max-width: 28rem; word-break: break-word; }
tr.failed td { background: #fdecea; }
tr.stopped td { background: #fff6e0; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .85rem; }
details summary { cursor: pointer; font-weight: 600; }
.problems { border-left: 4px solid #e0a800; padding-left: 1rem; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str]) -> str:
    """An HTML table of plain-text cells; every cell is escaped here, nowhere else."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for row, css in zip(rows, classes, strict=True):
        cells = "".join(_td(cell) for cell in row)
        attr = f' class="{_esc(css)}"' if css else ""
        body.append(f"<tr{attr}>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _td(text: str) -> str:
    numeric = text[:1].isdigit() or text[:1] in "+-.—"
    css = "" if numeric else ' class="text"'
    return f"<td{css}>{_esc(text)}</td>"


def _accuracy_items(h: Headline) -> list[tuple[str, str]]:
    if h.final_accuracy is None:
        return [("Final accuracy", "<span class='muted'>not evaluated</span>")]
    which = "server held-out" if h.accuracy_key == "eval_accuracy" else "clients' held-out"
    items = [(f"Final eval accuracy ({which}, round {h.final_round})", _fmt_pct(h.final_accuracy))]
    if h.baseline_accuracy is None:
        items.append(("Untrained adapter", "<span class='muted'>no round-0 evaluation</span>"))
        return items
    gain = (h.final_accuracy - h.baseline_accuracy) * 100.0
    css = "good" if gain > 0 else "bad"
    items.append(("Untrained adapter (round 0)", _fmt_pct(h.baseline_accuracy)))
    items.append(("Gain", f"<span class='{css}'>{_esc(f'{gain:+.2f}')} percentage points</span>"))
    return items


def _fmt_pct(value: float) -> str:
    return _esc(_fmt_percent(value))


def _privacy_item(h: Headline) -> tuple[str, str]:
    if not h.dp_ran:
        return ("Differential privacy", "off (no ε recorded)")
    eps = "not recorded" if h.epsilon_max is None else _fmt_float(h.epsilon_max, ".3f")
    delta = "" if h.delta is None else f", δ = {h.delta:g}"
    return ("Final ε max", _esc(f"{eps}{delta}"))


def _failed_item(h: Headline) -> tuple[str, str]:
    if not h.failed_rounds:
        return ("Failed rounds", "0")
    listed = ", ".join(str(r) for r in h.failed_rounds)
    noun = "round" if len(h.failed_rounds) == 1 else "rounds"
    return (
        "Failed rounds",
        f"<span class='bad'>{len(h.failed_rounds)} ({noun} {_esc(listed)})</span>",
    )


def render_headline(h: Headline) -> str:
    secagg = {True: "on", False: "off", None: "unknown"}[h.secagg]
    items = [("Rounds completed", _esc(f"{h.rounds_completed} of {h.rounds_run}"))]
    items += _accuracy_items(h)
    items += [_privacy_item(h), ("Secure aggregation", secagg), _failed_item(h)]
    # Values above are already escaped (or fixed markup around escaped text).
    rows = "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in items)
    css = "headline has-failures" if h.failed_rounds else "headline"
    return f'<div class="{css}"><dl>{rows}</dl></div>'


def render_plots(plots: Sequence[PlotSpec]) -> str:
    if not plots:
        return "<p class='muted'>No plottable metrics.</p>"
    figures = (
        f'<figure><img src="{_esc(p.filename)}" alt="{_esc(p.caption)}">'
        f"<figcaption>{_esc(p.caption)}</figcaption></figure>"
        for p in plots
    )
    return "".join(figures)


def _columns(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {key for r in rounds for key in r}
    known = [key for key in _COLUMN_ORDER if key in present]
    return known + sorted(present - set(_COLUMN_ORDER))


def render_rounds_table(rounds: Sequence[Mapping[str, Any]]) -> str:
    columns = _columns(rounds)
    headers = [_COLUMN_LABELS.get(c, c.replace("_", " ")) for c in columns]
    rows = [[format_value(c, r.get(c)) for c in columns] for r in rounds]
    classes = ["failed" if r.get("failed") is True else "" for r in rounds]
    return _table(headers, rows, classes)


def _total_steps(history: object) -> int:
    """Sum of DP-SGD steps over the client's rounds; odd entries are ignored."""
    if not isinstance(history, list):
        return 0
    return sum(
        int(entry[2])
        for entry in history
        if isinstance(entry, list | tuple) and len(entry) >= 3 and _is_number(entry[2])
    )


def _ledger_row(cid: str, entry: Mapping[str, Any], delta: float | None) -> list[str]:
    history = entry.get("history")
    client_delta = entry.get("delta") if _is_number(entry.get("delta")) else delta
    budget = entry.get("budget")
    return [
        cid,
        _fmt_float(float(entry["epsilon"]), ".3f") if _is_number(entry.get("epsilon")) else "—",
        f"{client_delta:g}" if _is_number(client_delta) else "—",
        _fmt_float(float(budget), ".3f") if _is_number(budget) else "none",
        str(len(history)) if isinstance(history, list) else "—",
        f"{_total_steps(history):,}",
        "yes" if entry.get("stopped_for_budget") is True else "no",
    ]


def render_ledger(ledger: Mapping[str, Any] | None) -> str:
    if ledger is None:
        return f"<p class='muted'>No {_esc(LEDGER_FILE)}: differential privacy was off.</p>"
    clients = _ledger_clients(ledger)
    order = sorted(clients, key=_natural_key)
    headers = ["client", "ε", "δ", "budget ε", "rounds trained", "steps total", "stopped"]
    rows = [_ledger_row(cid, clients[cid], _ledger_delta(ledger)) for cid in order]
    classes = ["stopped" if clients[c].get("stopped_for_budget") is True else "" for c in order]
    accountant = ledger.get("accountant", "unknown")
    intro = f"<p>Accountant: {_esc(accountant)}. One row per client that trained with DP.</p>"
    return intro + _table(headers, rows, classes)


def render_summary(summary: object) -> str:
    if summary is None:
        return "<p class='muted'>No summary.json.</p>"
    if not isinstance(summary, Mapping):
        return f"<pre>{_esc(json.dumps(summary, indent=2, ensure_ascii=False))}</pre>"
    rows = [[str(key), format_value(str(key), value)] for key, value in summary.items()]
    return _table(["entry", "value"], rows, [""] * len(rows))


def render_config(text: str | None) -> str:
    if text is None:
        return "<p class='muted'>No config.resolved.toml.</p>"
    return f"<details><summary>{_esc(CONFIG_FILE)}</summary><pre>{_esc(text)}</pre></details>"


def render_problems(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{_esc(p)}</li>" for p in problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        items += f"<li>… and {len(problems) - MAX_PROBLEMS_SHOWN} more (see the log)</li>"
    return f"<section class='problems'><h2>Input problems</h2><ul>{items}</ul></section>"


def render_html(data: RunData, plots: Sequence[PlotSpec], title: str) -> str:
    sections = [
        f"<h1>{_esc(title)}</h1>",
        render_headline(compute_headline(data)),
        render_problems(data.problems),
        "<h2>Plots</h2>" + render_plots(plots),
        "<h2>Rounds</h2>" + render_rounds_table(data.rounds),
        "<h2>Privacy ledger</h2>" + render_ledger(data.ledger),
        "<h2>Summary</h2>" + render_summary(data.summary),
        "<h2>Configuration</h2>" + render_config(data.config_text),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )


# ------------------------------------------------------------------------- output


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the report from a web server
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_report(output_dir: str | Path) -> Path:
    """Write the plots and ``report.html`` into ``output_dir``; returns the HTML path.

    Raises FileNotFoundError / ValueError when ``metrics.jsonl`` is missing or has no
    usable round, since there is then nothing to report.
    """
    out = Path(output_dir)
    data = load_run(out)
    plots = write_plots(out, data)
    title = f"privatune run report: {out.resolve().name}"
    path = out / REPORT_FILE
    atomic_write(path, render_html(data, plots, title).encode("utf-8"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulations.report DIR``: regenerate the report of a run folder."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations.report",
        description="Regenerate report.html and its plots from a run's output folder.",
    )
    parser.add_argument("output_dir", type=Path, help="folder holding metrics.jsonl")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        path = write_report(args.output_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

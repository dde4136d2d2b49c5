"""The report's plots: one PNG per question a reader asks (loss, accuracy, bytes, ε, clients).

The Agg canvas is attached to each figure explicitly instead of calling
``matplotlib.use("Agg")``: importing this module never changes the backend of a host
process (a notebook, a test session) and no display is ever needed.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from common.atomic import write_bytes_atomic
from server.report.format import natural_key
from server.report.headline import (
    Series,
    accuracy_key,
    baseline_value,
    failed_rounds,
    ledger_delta,
    metric_series,
)
from server.report.inputs import RunData, is_number, ledger_clients

DPI = 110
FIGSIZE = (7.5, 4.2)
MAX_CLIENT_LINES = 20  # beyond this a per-client ε plot is unreadable spaghetti


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
        xs, ys = metric_series(rounds, key)
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
    _shade_failed(ax, failed_rounds(data))
    return fig


def plot_accuracy(data: RunData) -> Figure | None:
    fig, ax = _new_axes("Accuracy per round", "accuracy (%)")
    keys = (
        ("eval_accuracy", "eval accuracy (server held-out)", 100.0),
        ("fed_eval_accuracy", "eval accuracy (clients' held-out)", 100.0),
    )
    if not _plot_lines(ax, data.rounds, keys):
        return None
    baseline = baseline_value(data.rounds, accuracy_key(data.rounds))
    if baseline is not None:
        ax.axhline(baseline * 100.0, color="gray", linestyle="--", label="untrained adapter")
    _shade_failed(ax, failed_rounds(data))
    return fig


GENERATION_METRICS = (  # (metric, label, scale to 0-100, colour)
    ("rouge_l", "ROUGE-L F", 100.0, "tab:blue"),
    ("bleu", "BLEU", 1.0, "tab:orange"),
    ("exact_match", "exact match", 100.0, "tab:green"),
)
GENERATION_SIDES = (("eval", "server held-out", "-"), ("fed_eval", "clients' held-out", "--"))


def plot_generation(data: RunData) -> Figure | None:
    """Scores of generated answers (causal LMs), all on 0-100 so one axis serves.

    One colour per metric; solid for the server's held-out set, dashed for the clients'.
    """
    fig, ax = _new_axes("Generated answers per round", "score (0-100)")
    drawn = 0
    for metric, label, scale, colour in GENERATION_METRICS:
        for side, where, style in GENERATION_SIDES:
            xs, ys = metric_series(data.rounds, f"{side}_{metric}")
            if xs:
                ys = [y * scale for y in ys]
                ax.plot(xs, ys, style, color=colour, marker="o", markersize=4)
                ax.lines[-1].set_label(f"{label} ({where})")
                drawn += 1
    if not drawn:
        return None
    ax.set_ylim(bottom=0)
    _shade_failed(ax, failed_rounds(data))
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
    _shade_failed(ax, failed_rounds(data))
    return fig


def _client_epsilon_series(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Series]:
    series: dict[str, Series] = {}
    for record in rounds:
        for cid, eps in record.get("client_epsilon", {}).items():
            xs, ys = series.setdefault(cid, ([], []))
            xs.append(record["round"])
            ys.append(eps)
    return dict(sorted(series.items(), key=lambda item: natural_key(item[0])))


def _client_budget(ledger: Mapping[str, Any] | None, cid: str) -> float | None:
    budget = ledger_clients(ledger).get(cid, {}).get("budget")
    return float(budget) if is_number(budget) else None


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
    budgets = {_client_budget(ledger, cid) for cid in ledger_clients(ledger)} - {None}
    for i, budget in enumerate(sorted(budgets)):
        ax.axhline(budget, color="gray", linestyle=":", label="client budget" if i == 0 else None)


def plot_epsilon(data: RunData) -> Figure | None:
    xs, ys = metric_series(data.rounds, "epsilon_max")
    series = _client_epsilon_series(data.rounds)
    if not xs and not series:
        return None
    delta = ledger_delta(data.ledger)
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
    _shade_failed(ax, failed_rounds(data))
    return fig


def plot_clients(data: RunData) -> Figure | None:
    keys = ("num_clients", "num_failures", "num_refused")
    rows = [r for r in data.rounds if any(is_number(r.get(k)) for k in keys)]
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
        heights = [float(r[key]) if is_number(r.get(key)) else 0.0 for r in rows]
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
    PlotSpec(
        "plot_generation.png",
        "ROUGE-L, BLEU and exact match of generated answers (greedy)",
        plot_generation,
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
        write_bytes_atomic(target, _figure_png(fig))
        written.append(spec)
    return written

"""The privacy audit's page: verdict, a table per run, AUC/exposure vs ε, loss histograms.

Reads only ``audit.json`` (written by :mod:`simulations.audit.run`), so the page can be
rebuilt on a machine without the training stack. Every value is escaped in one place.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.atomic import write_bytes_atomic, write_text_atomic
from server.report.page import _CSS

AUDIT_HTML = "audit.html"
PLOT_TRADEOFF = "plot_audit_tradeoff.png"
PLOT_LOSSES = "plot_audit_losses.png"
DPI = 110


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def run_label(run: Mapping[str, Any]) -> str:
    """ "no DP" or "ε = 0.99 (target 1)": the ledger's ε first, the target after it."""
    if run.get("target_epsilon") is None:
        return "no DP"
    return f"ε = {_fmt(run.get('epsilon'), '.2f')} (target {run['target_epsilon']:g})"


def _png(fig: Figure) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def plot_tradeoff(runs: Sequence[Mapping[str, Any]]) -> Figure:
    """AUC (with its DP bound) and member exposure for each run, from no DP to the smallest ε."""
    fig = Figure(figsize=(9.5, 4.0), dpi=DPI)
    FigureCanvasAgg(fig)
    ax_auc, ax_exp = fig.subplots(1, 2)
    labels = [run_label(r).replace(" (", "\n(") for r in runs]
    x = list(range(len(runs)))
    aucs = [r["auc"] for r in runs]
    errors = [1.96 * r.get("auc_se", 0.0) for r in runs]
    ax_auc.errorbar(x, aucs, yerr=errors, marker="o", capsize=4, label="attack AUC (95% CI)")
    bounds = [(i, r["auc_bound"]) for i, r in enumerate(runs) if r.get("auc_bound") is not None]
    if bounds:
        ax_auc.plot(
            [i for i, _ in bounds],
            [b for _, b in bounds],
            "v--",
            color="tab:gray",
            label="largest AUC (ε, δ)-DP allows",
        )
    ax_auc.axhline(0.5, color="tab:red", linestyle=":", label="chance")
    ax_auc.set_ylim(0.0, 1.05)
    ax_auc.set_ylabel("membership-inference AUC")
    ax_auc.set_title("loss-threshold attack on the canaries")
    ax_exp.plot(x, [r["member_exposure"] for r in runs], "o-", label="planted canaries")
    ax_exp.plot(x, [r["non_member_exposure"] for r in runs], "s--", label="never trained on")
    num = max((r.get("num_candidates") or 0) for r in runs)
    if num:
        ax_exp.axhline(math.log2(num), color="tab:gray", linestyle=":", label="maximum")
    ax_exp.set_ylabel("mean exposure (bits)")
    ax_exp.set_title("canary exposure")
    for ax in (ax_auc, ax_exp):
        ax.set_xticks(x, labels)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_losses(runs: Sequence[Mapping[str, Any]]) -> Figure:
    """Per run, the canary losses of members and non-members on shared bins."""
    fig = Figure(figsize=(3.6 * max(len(runs), 1), 3.4), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(runs), 1), squeeze=False)[0]
    everything = [x for r in runs for x in (*r["member_losses"], *r["non_member_losses"])]
    finite = [x for x in everything if math.isfinite(x)]
    low, top = (min(finite), max(finite)) if finite else (0.0, 1.0)
    bins = [low + (top - low) * i / 25 for i in range(26)] if top > low else 25
    for ax, run in zip(axes, runs, strict=False):
        # densities: there are usually more non-members than members
        ax.hist(run["member_losses"], bins=bins, alpha=0.6, density=True, label="members (planted)")
        ax.hist(run["non_member_losses"], bins=bins, alpha=0.6, density=True, label="non-members")
        ax.set_title(f"{run_label(run)}: AUC {run['auc']:.2f}", fontsize=9)
        ax.set_xlabel("loss of the planted secret")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _client_rows(rows: Mapping[str, int]) -> str:
    return ", ".join(
        f"client {cid}: {n}" for cid, n in sorted(rows.items(), key=lambda kv: int(kv[0]))
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def render_audit_html(audit: Mapping[str, Any]) -> str:
    runs = audit["runs"]
    spec = audit.get("spec", {})
    verdict = audit.get("verdict", {})
    conclusive = bool(verdict.get("conclusive"))
    rows = [
        [
            run_label(r),
            _fmt(r.get("epsilon"), ".3f"),
            _fmt(r.get("delta"), "g"),
            _fmt(r.get("noise_multiplier"), ".3f"),
            f"{r['auc']:.3f} ± {1.96 * r.get('auc_se', 0.0):.3f}",
            _fmt(r.get("auc_bound"), ".3f"),
            f"{r['member_exposure']:.2f}",
            f"{r['non_member_exposure']:.2f}",
            _fmt(r.get("final_eval_accuracy"), ".3f"),
            f"{r['seconds']:.0f} s",
        ]
        for r in runs
    ]
    header = [
        "run",
        "ε (canary client's ledger)",
        "δ",
        "σ",
        "attack AUC (95% CI)",
        "largest AUC DP allows",
        "exposure, planted",
        "exposure, never trained",
        "held-out accuracy",
        "run time",
    ]
    repeats = spec.get("repeats", 1)
    group = (
        f" Each canary is planted {repeats} times, so the DP bound uses group privacy "
        f"(k = {repeats})."
        if repeats > 1
        else " Each canary appears once, so example-level DP covers it directly."
    )
    klass = "headline" if conclusive else "headline has-failures"
    word = "conclusive" if conclusive else "INCONCLUSIVE"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>privatune privacy audit</title>
<style>{_CSS}</style></head><body>
<h1>privatune privacy audit</h1>
<div class="{klass}"><p><b>Verdict ({_esc(word)})</b>: {_esc(verdict.get("text", ""))}</p></div>
<h2>What was done</h2>
<p>{_esc(spec.get("members"))} random secrets (canaries) were planted in client
{_esc(audit.get("canary_client"))}'s data (rows per client, canaries included:
{_esc(_client_rows(audit.get("client_rows") or {}))});
{_esc(spec.get("non_members"))} more, drawn the same way, were never trained on.
The same federation ({_esc(audit.get("model"))}, task {_esc(audit.get("task"))},
same data and seeds) ran without DP and with DP-SGD at each target ε. An attacker holding the
final global adapter scores every canary by the loss of its secret: the AUC is the
loss-threshold membership attack's (0.5 = chance), and exposure is
log<sub>2</sub>(#candidates) − log<sub>2</sub>(rank of the true secret) over
{_esc(runs[0].get("num_candidates") if runs else "?")} candidates.{_esc(group)} The ε shown
is the canary client's, recomputed from the (σ, q, steps) its ledger recorded.
The audit is conclusive only if the non-private run's AUC reaches
{_esc(spec.get("min_auc"))}.</p>
<h2>Results</h2>
{_table(header, rows)}
<figure><img src="{PLOT_TRADEOFF}" alt="AUC and exposure per run">
<figcaption>Attack AUC and canary exposure, from no DP to the smallest ε.</figcaption></figure>
<figure><img src="{PLOT_LOSSES}" alt="loss histograms">
<figcaption>Loss of the planted secret: canaries trained on vs never trained on.</figcaption>
</figure>
<p class="muted">Total audit time {_esc(audit.get("seconds"))} s. Runs and their outputs:
{_esc(", ".join(r["run_dir"] for r in runs))}; figures in audit.json.</p>
</body></html>
"""


def write_audit_report(output_dir: str | Path) -> Path:
    """Plots and ``audit.html`` from ``audit.json``; the HTML last, so it never lacks a plot."""
    out = Path(output_dir)
    audit = json.loads((out / "audit.json").read_text())
    write_bytes_atomic(out / PLOT_TRADEOFF, _png(plot_tradeoff(audit["runs"])))
    write_bytes_atomic(out / PLOT_LOSSES, _png(plot_losses(audit["runs"])))
    path = out / AUDIT_HTML
    write_text_atomic(path, render_audit_html(audit))
    return path

"""The report's HTML page: headline, plots, rounds table, ledger, summary and config.

Every cell is escaped in one place (:func:`_table` / :func:`_esc`), so no value a run
wrote (an error message, a client id) can inject markup into the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from server.report.forgetting import (
    HEADERS,
    forgetting_caption,
    forgetting_cells,
    forgetting_rows,
)
from server.report.format import fmt_float, fmt_percent, format_value, natural_key
from server.report.headline import Headline, compute_headline, ledger_delta
from server.report.inputs import CONFIG_FILE, LEDGER_FILE, RunData, is_number, ledger_clients
from server.report.plots import PlotSpec

MAX_PROBLEMS_SHOWN = 50  # a file of bad lines must not bury the report under its list

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
    "eval_perplexity",
    "eval_rouge_l",
    "eval_bleu",
    "eval_exact_match",
    "fed_eval_rouge_l",
    "fed_eval_bleu",
    "fed_eval_exact_match",
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
    "eval_perplexity": "eval perplexity",
    "eval_rouge_l": "eval ROUGE-L",
    "eval_bleu": "eval BLEU",
    "eval_exact_match": "eval exact match",
    "fed_eval_rouge_l": "fed. eval ROUGE-L",
    "fed_eval_bleu": "fed. eval BLEU",
    "fed_eval_exact_match": "fed. eval exact match",
    "uplink_bytes": "uplink",
    "downlink_bytes": "downlink",
    "epsilon_max": "run ε max",
    "client_epsilon": "client run ε",
    "round_seconds": "duration",
}


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
tr.worse td { background: #fdecea; } tr.better td { background: #eef7ef; }
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


def _fmt_generation(scores: Mapping[str, float]) -> str:
    names = {"rouge_l": "ROUGE-L", "bleu": "BLEU", "exact_match": "exact match"}
    return ", ".join(
        f"{names[k]} {fmt_float(v, '.2f' if k == 'bleu' else '.3f')}" for k, v in scores.items()
    )


def _generation_items(h: Headline) -> list[tuple[str, str]]:
    g = h.generation
    if g is None:
        return []
    which = "server held-out" if g.side == "eval" else "clients' held-out"
    items = [
        (f"Generated answers ({which}, round {g.final_round})", _esc(_fmt_generation(g.final)))
    ]
    if g.baseline is not None:
        items.append(("Untrained adapter (round 0)", _esc(_fmt_generation(g.baseline))))
    return items


def _accuracy_items(h: Headline) -> list[tuple[str, str]]:
    if h.final_accuracy is None and h.generation is not None:
        return _generation_items(h)
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
    return _esc(fmt_percent(value))


def _privacy_item(h: Headline) -> tuple[str, str]:
    if not h.dp_ran:
        return ("Differential privacy", "off (no ε recorded)")
    eps = "not recorded" if h.epsilon_max is None else fmt_float(h.epsilon_max, ".3f")
    delta = "" if h.delta is None else f", δ = {h.delta:g}"
    caveats = "".join(f"<br><span class='bad'>{_esc(c)}</span>" for c in h.privacy_caveats)
    return ("Final run ε max", _esc(f"{eps}{delta}") + caveats)


def _failed_item(h: Headline) -> tuple[str, str]:
    if not h.failed_rounds:
        return ("Failed rounds", "0")
    listed = ", ".join(str(r) for r in h.failed_rounds)
    noun = "round" if len(h.failed_rounds) == 1 else "rounds"
    return (
        "Failed rounds",
        f"<span class='bad'>{len(h.failed_rounds)} ({noun} {_esc(listed)})</span>",
    )


def _method_items(h: Headline) -> list[tuple[str, str]]:
    """What ran: the aggregation strategy and the PEFT method."""
    unknown = "<span class='muted'>not recorded</span>"
    return [
        ("Strategy", _esc(h.strategy) if h.strategy else unknown),
        ("PEFT method", _esc(h.peft_method) if h.peft_method else unknown),
    ]


def render_headline(h: Headline) -> str:
    secagg = {True: "on", False: "off", None: "unknown"}[h.secagg]
    items = [("Rounds completed", _esc(f"{h.rounds_completed} of {h.rounds_run}"))]
    items += _accuracy_items(h)
    items += [_privacy_item(h), ("Secure aggregation", secagg), _failed_item(h)]
    items += _method_items(h)
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
        if isinstance(entry, list | tuple) and len(entry) >= 3 and is_number(entry[2])
    )


def _ledger_row(cid: str, entry: Mapping[str, Any], delta: float | None) -> list[str]:
    history = entry.get("history")
    client_delta = entry.get("delta") if is_number(entry.get("delta")) else delta
    budget = entry.get("budget")
    return [
        cid,
        fmt_float(float(entry["epsilon"]), ".3f") if is_number(entry.get("epsilon")) else "—",
        f"{client_delta:g}" if is_number(client_delta) else "—",
        fmt_float(float(budget), ".3f") if is_number(budget) else "none",
        str(len(history)) if isinstance(history, list) else "—",
        f"{_total_steps(history):,}",
        "yes" if entry.get("stopped_for_budget") is True else "no",
    ]


def render_ledger(ledger: Mapping[str, Any] | None) -> str:
    if ledger is None:
        return f"<p class='muted'>No {_esc(LEDGER_FILE)}: differential privacy was off.</p>"
    clients = ledger_clients(ledger)
    order = sorted(clients, key=natural_key)
    headers = ["client", "ε", "δ", "budget ε", "rounds trained", "steps total", "stopped"]
    rows = [_ledger_row(cid, clients[cid], ledger_delta(ledger)) for cid in order]
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


def render_forgetting(data: RunData) -> str:
    """Before/after table of the general held-out set; empty when not configured."""
    caption = forgetting_caption(data)
    if caption is None:
        return ""
    rows = [forgetting_cells(r) for r in forgetting_rows(data.forgetting or {})]
    classes = [r[-1] if r[-1] in ("worse", "better") else "" for r in rows]
    table = _table(HEADERS, rows, classes) if rows else ""
    return f"<h2>Forgetting check</h2><p>{_esc(caption)}</p>{table}"


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
        render_forgetting(data),
        "<h2>Privacy ledger</h2>" + render_ledger(data.ledger),
        "<h2>Summary</h2>" + render_summary(data.summary),
        "<h2>Configuration</h2>" + render_config(data.config_text),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )

"""Reading a run's output folder for the report, tolerant of damage.

Only a missing or empty ``metrics.jsonl`` is fatal. A bad metrics line, an unreadable
ledger or config is skipped and recorded in ``RunData.problems``, which the report shows:
a report of a broken run is exactly when a report is most needed.
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

log = logging.getLogger("server.report")

METRICS_FILE = "metrics.jsonl"
LEDGER_FILE = "privacy_ledger.json"
CONFIG_FILE = "config.resolved.toml"
SUMMARY_FILE = "summary.json"
FORGETTING_FILE = "forgetting.json"
REPORT_FILE = "report.html"

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
    *(f"{side}_{m}" for side in ("eval", "fed_eval") for m in ("rouge_l", "bleu", "exact_match")),
    "epsilon_max",
    "round_seconds",
)
_BOOL_KEYS = ("secagg", "failed")

# Known columns first, in the order a reader scans a round: what trained, how well,


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
    forgetting: dict[str, Any] | None = None


def _note(problems: list[str], message: str) -> None:
    log.warning("%s", message)
    problems.append(message)


def is_number(value: object) -> TypeGuard[int | float]:
    """JSON numbers only: ``True`` is an int to Python but never a metric value."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clean_record(record: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Drop values of the wrong type so one odd field does not cost the whole round."""
    clean = dict(record)
    for key in _NUMERIC_KEYS:
        if key in clean and not is_number(clean[key]):
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
    good = {str(cid): float(eps) for cid, eps in value.items() if is_number(eps)}
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


def ledger_clients(ledger: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
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
    forgetting = _load_forgetting(output_dir / FORGETTING_FILE, problems)
    return RunData(rounds, ledger, config_text, config, summary, problems, forgetting)


def _load_forgetting(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """forgetting.json: {"before": {...}, "after": {...}, ...}; odd values are dropped."""
    raw = _load_json(path, problems)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        _note(problems, f"{path.name}: not a JSON object; ignored")
        return None
    clean = dict(raw)
    for side in ("before", "after"):
        table = raw.get(side)
        if not isinstance(table, Mapping):
            if table is not None:
                _note(problems, f"{path.name}: '{side}' is not an object; ignored")
            clean[side] = {}
            continue
        clean[side] = {str(k): float(v) for k, v in table.items() if is_number(v)}
    return clean

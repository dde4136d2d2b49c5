"""Resuming a killed run: what may differ from the run's saved config, and what is redone.

A run resumes from its last checkpoint (server/checkpoint.py) with the config it was
started with (``config.resolved.toml`` in its folder). A config given on resume must
match it, except for settings that change how the run is executed but not what it
computes (resources, threads, timeouts); anything else would make the resumed rounds a
different experiment, or change privacy calibration (σ from target-epsilon depends on
federation.rounds), so it is refused, naming each key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.config import RunConfig, load_config
from common.errors import PrivatuneError
from common.outcome import Outcome, outcome_of
from server.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint
from server.outputs import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, write_text_atomic

# Keys whose value may change on resume: how the run executes, not what it computes.
FREE_ON_RESUME = (
    "simulation.",
    "training.threads",
    "federation.round-timeout",
    "federation.wait-for-clients",
)


def saved_config(folder: Path) -> RunConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise PrivatuneError(f"--resume {folder}: no {CONFIG_FILE}; not a privatune run folder")
    return load_config(path)


def config_differences(saved: RunConfig, given: RunConfig) -> list[str]:
    """Keys (dotted, kebab-case) whose values differ in a way that matters on resume."""
    old, new = saved.to_flat(), given.to_flat()
    keys = sorted(set(old) | set(new))
    return [
        f"{key}: {old.get(key)!r} in the saved config, {new.get(key)!r} now"
        for key in keys
        if old.get(key) != new.get(key) and not key.startswith(FREE_ON_RESUME)
    ]


def check_resumable(folder: Path, config: RunConfig | None = None) -> tuple[RunConfig, Checkpoint]:
    """The config and checkpoint to resume ``folder`` with, or an error saying why not.

    ``config`` (from --config/--set) defaults to the saved one; if given, it may differ
    from the saved one only in FREE_ON_RESUME keys, and then its values for those are used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PrivatuneError(f"--resume {folder}: no such folder")
    saved = saved_config(folder)
    if config is not None:
        problems = config_differences(saved, config)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise PrivatuneError(
                f"--resume {folder}: the config differs from {folder / CONFIG_FILE}:\n{lines}\n"
                "a resumed run must compute what the original would have; drop --config/--set "
                "to use the saved config, or start a new run"
            )
    checkpoint = load_checkpoint(folder)
    if checkpoint.finished or _ended_for_good(folder / SUMMARY_FILE):
        raise PrivatuneError(
            f"--resume {folder}: the run already finished (round {checkpoint.round} of "
            f"{saved.federation.rounds}; {SUMMARY_FILE} written); nothing to resume"
        )
    return (config if config is not None else saved), checkpoint


def _ended_for_good(summary: Path) -> bool:
    """A summary exists and says the run did not fail (a failed run may be resumed)."""
    if not summary.exists():
        return False
    try:
        return outcome_of(json.loads(summary.read_text(encoding="utf-8"))) is not Outcome.FAILED
    except (OSError, ValueError):
        return True  # unreadable: do not guess that it may be continued


def rewind_metrics(folder: Path, last_round: int) -> list[dict[str, Any]]:
    """Keep the metrics of rounds up to ``last_round``; later lines are rounds to redo.

    A torn last line (killed while writing) is dropped; a bad line before it is an error.
    """
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        raise PrivatuneError(f"--resume {folder}: {METRICS_FILE} is missing")
    lines = path.read_text(encoding="utf-8").splitlines()
    kept: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise PrivatuneError(f"{path}:{number}: not a JSON line ({exc})") from exc
        if int(record.get("round", -1)) <= last_round:
            kept.append(record)
    if not any(r.get("round") == last_round for r in kept):
        raise PrivatuneError(
            f"{path}: no line for round {last_round}, which {CHECKPOINT_FILE} says completed"
        )
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    write_text_atomic(path, text)
    return kept

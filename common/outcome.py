"""How a run ended, and the exit code that says so (README "Exit codes").

A run's ``summary.json`` carries its outcome; ``privatune simulate`` and ``privatune
coordinator run`` exit with the outcome's code, so a script or a scheduler can tell a
run that did what it was asked from one that failed, was refused by every node, or ran
out of privacy budget. Code 2 is bad input caught before the run started (privatune/cli.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from common.protocol import BUDGET_REFUSAL


class Outcome(StrEnum):
    """What a run did, with its exit code."""

    COMPLETED = "completed"  # every round asked for ran
    FAILED = "failed"  # a round failed, or the run stopped on an error
    REFUSED = "refused"  # every sampled client refused on policy grounds
    BUDGET = "budget"  # every sampled client refused: its privacy budget is spent

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]


EXIT_CODES = {Outcome.COMPLETED: 0, Outcome.FAILED: 1, Outcome.REFUSED: 3, Outcome.BUDGET: 4}
BAD_INPUT_EXIT = 2


def stop_outcome(refusals: Iterable[str]) -> Outcome:
    """BUDGET when every refusal is for a spent budget, else REFUSED."""
    reasons = list(refusals)
    if reasons and all(BUDGET_REFUSAL in r for r in reasons):
        return Outcome.BUDGET
    return Outcome.REFUSED


def outcome_of(summary: Mapping[str, Any]) -> Outcome:
    """The outcome a summary records (older summaries: inferred from its counts)."""
    named = summary.get("outcome")
    if isinstance(named, str) and named in {o.value for o in Outcome}:
        return Outcome(named)
    if summary.get("rounds_failed") or summary.get("error"):
        return Outcome.FAILED
    if summary.get("stopped_early"):
        return Outcome.REFUSED
    return Outcome.COMPLETED


_SHOWN = (
    "rounds_completed",
    "rounds_failed",
    "eval_source",
    "untrained_eval_accuracy",
    "final_eval_accuracy",
    "epsilon_max",
    "central_epsilon",
    "delta",
    "seconds",
)


def summary_text(summary: Mapping[str, Any], output: object) -> str:
    """What a finished run prints: its outcome in one line, then the headline figures."""
    outcome = outcome_of(summary)
    head = {
        Outcome.COMPLETED: f"run completed: {output}",
        Outcome.FAILED: f"run FAILED: {output}",
        Outcome.REFUSED: f"run stopped, every node refused: {output}",
        Outcome.BUDGET: f"run stopped, privacy budgets spent: {output}",
    }[outcome]
    lines = [f"{head} (exit {outcome.exit_code})"]
    why = summary.get("error") or summary.get("stopped_early")
    if why:
        lines.append(f"  why: {why}")
    lines += [f"  {key}: {summary[key]}" for key in _SHOWN if summary.get(key) is not None]
    return "\n".join(lines)

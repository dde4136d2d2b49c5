"""How a run ended and the exit code that says it: one truth for simulate and deploy."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from common.outcome import BAD_INPUT_EXIT, Outcome, outcome_of, stop_outcome, summary_text
from server.app import run_outcome, summarise


def _round(n: int, **kw: object) -> dict:
    return {"round": n, "failed": False, **kw}


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [o.exit_code for o in Outcome] + [BAD_INPUT_EXIT]
    assert len(set(codes)) == len(codes)
    assert Outcome.COMPLETED.exit_code == 0 and all(c != 0 for c in codes[1:])
    readme = Path("README.md").read_text(encoding="utf-8")
    for outcome in Outcome:
        assert f"| {outcome.exit_code} | `{outcome.value}`" in readme, outcome


@pytest.mark.parametrize(
    ("history", "error", "expected"),
    [
        ([_round(0), _round(1), _round(2)], None, Outcome.COMPLETED),
        ([_round(0), _round(1, failed=True), _round(2)], None, Outcome.FAILED),
        ([_round(0), _round(1)], "round 2: only 1 of 2 clients connected", Outcome.FAILED),
        # every client refused in round 1: the run did not do what was asked
        ([_round(0), _round(1, stopped="x", stop_outcome="refused")], None, Outcome.REFUSED),
        (
            [_round(0), _round(1), _round(2, stopped="x", stop_outcome="budget")],
            None,
            Outcome.BUDGET,
        ),
        ([_round(0)], None, Outcome.FAILED),  # no round ran, nothing said why: not success
    ],
)
def test_run_outcome(history: list[dict], error: str | None, expected: Outcome) -> None:
    assert run_outcome(history, 2, error) is expected


def test_budget_only_when_every_refusal_is_for_budget() -> None:
    assert stop_outcome(["privacy budget: ε would reach 9 > 8"]) is Outcome.BUDGET
    assert stop_outcome(["run privacy budget: this run's ε would reach 9"]) is Outcome.BUDGET
    assert stop_outcome(["privacy budget: x", "requires DP-SGD"]) is Outcome.REFUSED
    assert stop_outcome([]) is Outcome.REFUSED


def test_summary_records_outcome_error_and_evaluation_source() -> None:
    config = load_config(None, ["federation.rounds=2"])
    history = [
        _round(0, fed_eval_accuracy=0.2, fed_eval_loss=1.5),
        _round(1, fed_eval_accuracy=0.4, fed_eval_loss=1.2),
    ]
    summary = summarise(history, config, 1.0, error="round 2: nodes gone")
    assert summary["outcome"] == "failed" and summary["exit_code"] == 1
    assert summary["error"] == "round 2: nodes gone" and summary["rounds_completed"] == 1
    # no server-side set: the headline figures are the federated evaluation's
    assert summary["eval_source"] == "federated"
    assert summary["untrained_eval_accuracy"] == 0.2 and summary["final_eval_accuracy"] == 0.4
    assert outcome_of(summary) is Outcome.FAILED


def test_server_evaluation_wins_and_untrained_means_round_0() -> None:
    config = load_config(None, ["federation.rounds=1"])
    history = [_round(1, eval_accuracy=0.7, eval_loss=0.5, fed_eval_accuracy=0.6)]
    summary = summarise(history, config, 1.0)
    assert summary["eval_source"] == "server" and summary["final_eval_accuracy"] == 0.7
    assert summary["untrained_eval_accuracy"] is None  # round 0 did not evaluate
    assert summary["outcome"] == "completed" and summary["error"] is None


def test_summary_text_leads_with_the_outcome_and_why() -> None:
    text = summary_text({"outcome": "budget", "stopped_early": "every client refused"}, "out")
    first, second = text.splitlines()[:2]
    assert first == "run stopped, privacy budgets spent: out (exit 4)"
    assert second == "  why: every client refused"


def test_old_summaries_without_an_outcome() -> None:
    assert outcome_of({"rounds_failed": 0}) is Outcome.COMPLETED
    assert outcome_of({"rounds_failed": 1}) is Outcome.FAILED
    assert outcome_of({"stopped_early": "every sampled client refused"}) is Outcome.REFUSED

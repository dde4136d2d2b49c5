"""Report sections for evaluation: generation metrics, the forgetting table, what ran."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from server.report import write_report
from server.report.forgetting import ForgettingRow, forgetting_rows

CAUSAL_CONFIG = """\
[model]
task = "causal-lm"

[data]
general-eval = "demo"

[federation]
strategy = "fedavg"

[server-optimizer]
name = "fedadam"

[lora]
variant = "ffa"
"""


def _rounds() -> list[dict[str, Any]]:
    return [
        {
            "round": 0,
            "eval_loss": 2.5,
            "eval_rouge_l": 0.1,
            "eval_bleu": 1.5,
            "eval_exact_match": 0.0,
        },
        {
            "round": 1,
            "train_loss": 2.0,
            "num_clients": 2,
            "eval_loss": 1.9,
            "eval_rouge_l": 0.42,
            "eval_bleu": 12.345,
            "eval_exact_match": 0.25,
            "fed_eval_rouge_l": 0.4,
            "fed_eval_bleu": 11.0,
            "fed_eval_exact_match": 0.125,
        },
    ]


FORGETTING = {
    "general_eval": "demo",
    "before_round": 0,
    "after_round": 1,
    "before": {"loss": 1.25, "perplexity": 3.49, "rouge_l": 0.5, "bleu": 20.0, "exact_match": 0.25},
    "after": {"loss": 1.5, "perplexity": 4.48, "rouge_l": 0.375, "bleu": 20.0, "exact_match": 0.5},
}


def _write_run(
    folder: Path,
    *,
    rounds: list[dict[str, Any]] | None = None,
    config: str | None = CAUSAL_CONFIG,
    forgetting: object = FORGETTING,
    summary: dict[str, Any] | None = None,
) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(r) for r in (rounds if rounds is not None else _rounds()))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if config is not None:
        (folder / "config.resolved.toml").write_text(config)
    if forgetting is not None:
        (folder / "forgetting.json").write_text(json.dumps(forgetting))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return write_report(folder).read_text()


def _section(page: str, title: str) -> str:
    match = re.search(rf"<h2>{title}</h2>(.*?)(?=<h2>|</body>)", page, re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def _table_rows(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows if "<td" in row]


def test_generation_metrics_get_columns_and_a_plot(tmp_path: Path) -> None:
    page = _write_run(tmp_path / "run")
    assert (tmp_path / "run" / "plot_generation.png").read_bytes().startswith(b"\x89PNG")
    assert 'src="plot_generation.png"' in page
    rounds = _section(page, "Rounds")
    for label in ("eval ROUGE-L", "eval BLEU", "eval exact match", "fed. eval ROUGE-L"):
        assert f"<th>{label}</th>" in rounds
    cells = _table_rows(rounds)[1]
    assert "0.4200" in cells and "12.35" in cells and "0.2500" in cells and "0.1250" in cells


def test_classification_run_has_no_generation_plot_or_forgetting_section(tmp_path: Path) -> None:
    rounds = [
        {"round": 0, "eval_loss": 1.0, "eval_accuracy": 0.2},
        {"round": 1, "eval_accuracy": 0.5},
    ]
    page = _write_run(tmp_path / "run", rounds=rounds, config=None, forgetting=None)
    assert not (tmp_path / "run" / "plot_generation.png").exists()
    assert "Forgetting check" not in page


def test_forgetting_table_by_hand(tmp_path: Path) -> None:
    """Before, after, change and verdict; lower is better only for loss and perplexity."""
    page = _write_run(tmp_path / "run")
    section = _section(page, "Forgetting check")
    assert "General held-out set &#x27;demo&#x27;" in section
    rows = _table_rows(section)
    assert [r[0] for r in rows] == [
        "loss",
        "perplexity",
        "ROUGE-L F",
        "BLEU (0-100)",
        "exact match",
    ]
    assert rows[0] == ["loss", "1.2500", "1.5000", "+0.2500", "worse"]
    assert rows[1][4] == "worse"
    assert rows[2] == ["ROUGE-L F", "0.5000", "0.3750", "-0.1250", "worse"]
    assert rows[3] == ["BLEU (0-100)", "20.00", "20.00", "+0.00", "unchanged"]
    assert rows[4] == ["exact match", "0.2500", "0.5000", "+0.2500", "better"]
    assert '<tr class="worse">' in section and '<tr class="better">' in section


def test_forgetting_rows_keep_metrics_seen_on_one_side_only() -> None:
    rows = forgetting_rows({"before": {"loss": 1.0, "generated": 4.0}, "after": {"zeta": 2.0}})
    assert rows == [ForgettingRow("loss", 1.0, None), ForgettingRow("zeta", None, 2.0)]
    assert rows[0].verdict == "—" and rows[0].change is None


def test_configured_forgetting_check_without_its_file_is_reported(tmp_path: Path) -> None:
    """A run that ended early still shows the section, saying why there is no table."""
    page = _write_run(tmp_path / "run", forgetting=None)
    section = _section(page, "Forgetting check")
    assert "no forgetting.json" in section and "<table>" not in section


def test_malformed_forgetting_file_is_a_noted_problem(tmp_path: Path) -> None:
    page = _write_run(tmp_path / "run", forgetting={"before": [1, 2], "after": {"loss": "x"}})
    assert "forgetting.json: &#x27;before&#x27; is not an object; ignored" in page
    assert "Forgetting check" in page


@pytest.mark.parametrize(
    ("summary", "config", "strategy", "peft"),
    [
        # The PEFT method recorded by the run wins over the config.
        (
            {"strategy": "hetlora", "peft_method": "prefix"},
            CAUSAL_CONFIG,
            "hetlora, server optimiser fedadam",
            "prefix",
        ),
        # Without it, the config: LoRA and its FFA variant, the server optimiser.
        (None, CAUSAL_CONFIG, "fedavg, server optimiser fedadam", "lora (FFA-LoRA)"),
        (None, '[federation]\nstrategy = "fedavg"\n[lora]\nr = 8\n', "fedavg", "lora"),
        (None, '[peft]\nmethod = "ia3"\n', None, "ia3"),
        ({"peft_method": 3}, None, None, None),  # a malformed value is not shown as a method
    ],
)
def test_headline_names_strategy_and_peft_method(
    tmp_path: Path, summary: Any, config: str | None, strategy: str | None, peft: str | None
) -> None:
    page = _write_run(tmp_path / "run", summary=summary, config=config, forgetting=None)
    unknown = "<span class='muted'>not recorded</span>"
    expected_strategy = strategy.replace("'", "&#x27;") if strategy else unknown
    assert f"<dt>Strategy</dt><dd>{expected_strategy}</dd>" in page
    assert f"<dt>PEFT method</dt><dd>{peft or unknown}</dd>" in page


def test_causal_headline_shows_generated_answer_scores_against_round_0(tmp_path: Path) -> None:
    page = _write_run(tmp_path / "run", forgetting=None)
    assert (
        "<dt>Generated answers (server held-out, round 1)</dt>"
        "<dd>ROUGE-L 0.420, BLEU 12.35, exact match 0.250</dd>"
    ) in page
    assert (
        "<dt>Untrained adapter (round 0)</dt><dd>ROUGE-L 0.100, BLEU 1.50, exact match 0.000</dd>"
    ) in page
    # Only the clients' scores: named as such, and no round 0 to compare with.
    rounds = [{"round": 0}, {"round": 1, "fed_eval_rouge_l": 0.5, "fed_eval_bleu": 3.0}]
    page = _write_run(tmp_path / "fed", rounds=rounds, forgetting=None)
    assert "<dt>Generated answers (clients&#x27; held-out, round 1)</dt>" in page
    assert "ROUGE-L 0.500, BLEU 3.00</dd>" in page and "Untrained adapter" not in page

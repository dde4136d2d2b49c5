"""Tests for the run report: it must render what a run left behind, and survive bad input.

The metrics are synthetic and written by each test, so these run without Flower, PEFT or
Opacus and finish in a few seconds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from server.report import main, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = (
    "plot_loss.png",
    "plot_accuracy.png",
    "plot_bytes.png",
    "plot_epsilon.png",
    "plot_clients.png",
)

CONFIG_TOML = """\
[model]
path = "default"

[data]
# A '<' must reach the page as &lt; or the page could be broken by a config value.
text-column = "a<b & c"

[privacy]
enabled = true
delta = 1e-05

[secure-aggregation]
enabled = true
"""


def _dp_rounds() -> list[dict[str, Any]]:
    """Round 0 (untrained adapter) then three trained rounds with DP and two clients."""
    base = {"uplink_bytes": 2_400_000, "downlink_bytes": 2_500_000, "secagg": True}
    return [
        {"round": 0, "eval_loss": 0.69, "eval_accuracy": 0.5, "eval_macro_f1": 0.33},
        {
            **base,
            "round": 1,
            "train_loss": 0.65,
            "num_clients": 2,
            "num_failures": 0,
            "num_refused": 0,
            "eval_loss": 0.6,
            "eval_accuracy": 0.62,
            "fed_eval_accuracy": 0.6,
            "epsilon_max": 1.25,
            "client_epsilon": {"0": 1.25, "1": 1.1},
            "round_seconds": 12.3,
        },
        {
            **base,
            "round": 2,
            "train_loss": 0.55,
            "num_clients": 1,
            "num_failures": 1,
            "num_refused": 0,
            "eval_loss": 0.52,
            "eval_accuracy": 0.7,
            "fed_eval_accuracy": 0.68,
            "epsilon_max": 2.0,
            "client_epsilon": {"0": 2.0, "1": 1.1},
            "round_seconds": 11.0,
        },
        {
            **base,
            "round": 3,
            "train_loss": 0.45,
            "num_clients": 1,
            "num_failures": 0,
            "num_refused": 1,
            "eval_loss": 0.47,
            "eval_accuracy": 0.8125,
            "fed_eval_accuracy": 0.79,
            "epsilon_max": 2.75,
            "client_epsilon": {"0": 2.75, "1": 1.1},
            "round_seconds": 10.5,
        },
    ]


LEDGER = {
    "delta": 1e-05,
    "accountant": "rdp",
    "clients": {
        "0": {
            "history": [[1.1, 0.05, 40], [1.1, 0.05, 40], [1.1, 0.05, 40]],
            "epsilon": 2.75,
            "delta": 1e-05,
            "budget": 3.0,
            "stopped_for_budget": False,
        },
        "1": {
            "history": [[1.1, 0.05, 40]],
            "epsilon": 1.1,
            "delta": 1e-05,
            "budget": 1.5,
            "stopped_for_budget": True,
        },
    },
}


def _write_metrics(folder: Path, rounds: list[dict[str, Any]], extra_lines: tuple = ()) -> None:
    lines = [json.dumps(r) for r in rounds] + list(extra_lines)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _dp_run(folder: Path) -> Path:
    _write_metrics(folder, _dp_rounds())
    (folder / "privacy_ledger.json").write_text(json.dumps(LEDGER), encoding="utf-8")
    (folder / "config.resolved.toml").write_text(CONFIG_TOML, encoding="utf-8")
    summary = {"best_eval_accuracy": 0.8125, "wall_seconds": 33.8, "note": "x<y"}
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return write_report(folder)


@pytest.fixture(scope="module")
def dp_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One rendered DP run shared by the assertions on it (plotting is the slow part)."""
    folder = tmp_path_factory.mktemp("dp_run")
    path = _dp_run(folder)
    return path, path.read_text(encoding="utf-8")


def test_dp_run_writes_report_and_all_plots(dp_report: tuple[Path, str]) -> None:
    path, _ = dp_report
    assert path.name == "report.html" and path.is_file()
    for name in ALL_PLOTS:
        data = (path.parent / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5_000, name
    assert not list(path.parent.glob(".*.tmp")), "temporary files left behind"


def test_dp_report_headline_shows_accuracy_and_gain(dp_report: tuple[Path, str]) -> None:
    _, page = dp_report
    assert "81.25%" in page  # final eval accuracy, round 3
    assert "50.00%" in page  # untrained adapter, round 0
    assert "+31.25 percentage points" in page
    assert "2.750, δ = 1e-05" in page
    assert "Secure aggregation</dt><dd>on" in page
    assert "Failed rounds</dt><dd>0" in page
    assert 'class="headline"' in page


def test_dp_report_shows_ledger_summary_and_escaped_config(dp_report: tuple[Path, str]) -> None:
    _, page = dp_report
    ledger = page.split("<h2>Privacy ledger</h2>")[1].split("<h2>")[0]
    assert "<td>0</td><td>2.750</td>" in ledger
    assert "<td>1</td><td>1.100</td>" in ledger
    assert "120" in ledger  # client 0's steps total
    assert 'class="stopped"' in ledger  # client 1 hit its budget
    assert "a&lt;b &amp; c" in page
    assert "a<b" not in page
    assert "x&lt;y" in page and "best_eval_accuracy" in page
    for name in ALL_PLOTS:
        assert f'src="{name}"' in page
    assert "<script" not in page


def test_run_without_dp_has_no_epsilon_plot(tmp_path: Path) -> None:
    rounds = [
        {k: v for k, v in r.items() if k not in ("epsilon_max", "client_epsilon")}
        for r in _dp_rounds()
    ]
    _write_metrics(tmp_path, rounds)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert not (tmp_path / "plot_epsilon.png").exists()
    assert (tmp_path / "plot_accuracy.png").exists()
    assert "plot_epsilon.png" not in page
    assert "Differential privacy</dt><dd>off" in page
    assert "No privacy_ledger.json" in page


def test_failed_round_is_highlighted_in_headline(tmp_path: Path) -> None:
    rounds = [*_dp_rounds()[:3], {"round": 3, "failed": True, "error": "SecAgg <timeout>"}]
    _write_metrics(tmp_path, rounds)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert 'class="headline has-failures"' in page
    assert "<span class='bad'>1 (round 3)</span>" in page
    assert "Rounds completed</dt><dd>2 of 3" in page
    assert '<tr class="failed">' in page
    assert "SecAgg &lt;timeout&gt;" in page


def test_missing_metrics_raises_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl.*no rounds"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_empty_metrics_raises(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics\.jsonl.*no rounds"):
        write_report(tmp_path)


def test_malformed_line_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = _dp_rounds()
    _write_metrics(tmp_path, rounds[:2], extra_lines=("{not json", json.dumps(rounds[2])))
    with caplog.at_level(logging.WARNING, logger="server.report"):
        page = write_report(tmp_path).read_text(encoding="utf-8")
    assert any("line 3" in r.getMessage() for r in caplog.records)
    assert "metrics.jsonl line 3: not valid JSON" in page
    rounds_table = page.split("<h2>Rounds</h2>")[1].split("<h2>")[0]
    assert rounds_table.count("<tr>") + rounds_table.count("<tr ") == 4  # header + 3 rounds


def test_main_regenerates_and_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    _write_metrics(tmp_path, [{"round": 0, "eval_accuracy": 0.5}])
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file()

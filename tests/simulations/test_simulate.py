"""End to end: tiny federations on Flower's simulation engine, and the README demo command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.config import load_config
from common.privacy.ledger import compute_epsilon
from simulations.run import simulate

ROOT = Path(__file__).resolve().parents[2]


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _tiny(tiny_bert: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{tiny_bert}'",
            "data.demo-examples=300",
            "data.server-eval-examples=100",
            "partition.method='iid'",
            "federation.num-clients=3",
            "federation.clients-per-round=3",
            "federation.min-clients=2",
            "training.batch-size=16",
            "training.threads=1",
            *extra,
        ],
    )


def test_tiny_simulation_reduces_loss_and_writes_the_output_contract(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """2 rounds, 3 clients, no DP: loss falls; every promised output exists and loads."""
    config = _tiny(
        tiny_bert,
        "privacy.enabled=false",
        "federation.rounds=2",
        "training.local-steps=15",
        "training.lr=0.01",
    )
    out = tmp_path / "run"
    summary = simulate(config, out)
    rows = _metrics(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["eval_loss"] < rows[0]["eval_loss"] - 0.02
    assert rows[2]["train_loss"] < rows[1]["train_loss"]
    for r in rows[1:]:
        assert r["num_clients"] == 3 and r["uplink_bytes"] > 0 and r["failed"] is False
        assert "eval_accuracy" in r and r["secagg"] is False
    assert summary["rounds_completed"] == 2
    for name in ("config.resolved.toml", "report.html", "summary.json", "plot_loss.png"):
        assert (out / name).is_file(), name
    assert load_config(out / "config.resolved.toml") == config
    for folder in (
        out / "adapter",
        out / "checkpoints" / "round-1",
        out / "checkpoints" / "round-2",
    ):
        assert (folder / "adapter_model.safetensors").is_file()

    # A stock PeftModel loads the final adapter and reproduces the server's eval loss.
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from common.data.pipeline import server_eval_data
    from common.evaluation import evaluate
    from common.models import load_tokenizer

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=5)
    model = PeftModel.from_pretrained(base, out / "adapter")
    data = server_eval_data(config, load_tokenizer(str(tiny_bert)))
    assert data is not None
    scores = evaluate(model, data.dataset, "sequence-classification")
    assert scores["loss"] == pytest.approx(rows[2]["eval_loss"], rel=1e-4)


def test_budget_stops_clients_at_their_budget_and_ledger_recomputes(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """A small budget: clients refuse before exceeding it; ε in the ledger is recomputable."""
    config = _tiny(
        tiny_bert,
        "privacy.noise-multiplier=1.0",
        "privacy.budget-epsilon=2.0",
        "federation.rounds=6",
        "training.local-steps=10",
    )
    out = tmp_path / "run"
    summary = simulate(config, out, report=False)
    ledger = json.loads((out / "privacy_ledger.json").read_text())
    assert set(ledger["clients"]) == {"0", "1", "2"}
    for entry in ledger["clients"].values():
        assert entry["epsilon"] <= 2.0
        assert entry["stopped_for_budget"] is True
        recomputed = compute_epsilon([tuple(h) for h in entry["history"]], ledger["delta"])
        assert recomputed == pytest.approx(entry["epsilon"], abs=1e-6)
        assert entry["steps"] == 10 * len(entry["history"])
    rows = _metrics(out)
    assert any(r.get("num_refused", 0) > 0 for r in rows)
    assert all((r.get("epsilon_max") or 0) <= 2.0 for r in rows)
    assert summary["stopped_early"]
    assert summary["rounds_completed"] < 6


def test_existing_output_is_never_overwritten_silently(tiny_bert: Path, tmp_path: Path) -> None:
    """A second run into a used folder is refused unless --overwrite is given."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"round": 0}\n')
    from common.errors import PrivatuneError

    with pytest.raises(PrivatuneError, match="already holds a run"):
        simulate(_tiny(tiny_bert), out)
    assert (out / "metrics.jsonl").read_text() == '{"round": 0}\n'


def test_readme_demo_command_runs_with_a_tiny_model(tiny_bert: Path, tmp_path: Path) -> None:
    """`make demo` itself (the README command), pointed at a tiny model and one short round."""
    out = tmp_path / "demo"
    args = " ".join(
        [
            f"--set model.path='{tiny_bert}'",
            "--set data.demo-examples=200",
            "--set data.server-eval-examples=50",
            "--set federation.rounds=1",
            "--set training.local-steps=2",
        ]
    )
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["make", "-s", "demo", f"DEMO_OUT={out}", f"DEMO_ARGS={args}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run completed" in proc.stdout and "(exit 0)" in proc.stdout
    assert "round 1/1" in proc.stderr
    rows = _metrics(out)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["epsilon_max"] > 0
    assert (out / "report.html").is_file()
    assert torch.__version__.startswith("2.13.0")


def test_instruction_tuning_of_a_tiny_causal_lm(tiny_llama: Path, tmp_path: Path) -> None:
    """examples/instruct.toml with a tiny Llama: DP instruction tuning runs and lowers loss."""
    config = load_config(
        ROOT / "examples" / "instruct.toml",
        [
            f"model.path='{tiny_llama}'",
            "privacy.enabled=false",
            "federation.num-clients=2",
            "federation.clients-per-round=2",
            "federation.evaluate-clients=2",
            "federation.rounds=2",
            "training.local-steps=15",
            "training.lr=0.01",
            "training.threads=1",
        ],
    )
    out = tmp_path / "run"
    simulate(config, out, report=False)
    rows = _metrics(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["fed_eval_loss"] < rows[1]["train_loss"] + 1.0
    assert rows[2]["train_loss"] < rows[1]["train_loss"]
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_central_dp_run_reports_user_level_epsilon(tiny_bert: Path, tmp_path: Path) -> None:
    """Central DP on top of DP-SGD: both ε are reported, per round and in the summary."""
    config = _tiny(
        tiny_bert,
        "central-dp.enabled=true",
        "central-dp.noise-multiplier=1.0",
        "federation.rounds=2",
        "training.local-steps=2",
    )
    out = tmp_path / "run"
    summary = simulate(config, out, report=False)
    rows = _metrics(out)
    eps = [r["central_epsilon"] for r in rows[1:]]
    assert 0 < eps[0] < eps[1]
    assert summary["central_epsilon"] == pytest.approx(eps[1])
    assert rows[2]["epsilon_max"] > 0


def test_without_a_server_set_round_0_is_evaluated_federatedly(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """No server held-out set: the clients evaluate the untrained adapter too, and the
    summary's headline figures say they come from federated evaluation."""
    config = _tiny(
        tiny_bert,
        "data.server-eval=''",
        "federation.evaluate-clients=3",
        "privacy.enabled=false",
        "federation.rounds=1",
        "training.local-steps=3",
    )
    out = tmp_path / "run"
    summary = simulate(config, out, report=False)
    rows = _metrics(out)
    assert [r["round"] for r in rows] == [0, 1]
    assert "eval_accuracy" not in rows[0] and rows[0]["fed_eval_accuracy"] is not None
    assert summary["eval_source"] == "federated"
    assert summary["untrained_eval_accuracy"] == rows[0]["fed_eval_accuracy"]
    assert summary["final_eval_accuracy"] == rows[1]["fed_eval_accuracy"]
    assert summary["outcome"] == "completed" and summary["exit_code"] == 0

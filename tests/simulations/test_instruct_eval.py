"""Instruction tuning end to end: a mixture, generation metrics per round, forgetting table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import load_config
from common.data.demo import write_jsonl
from common.data.general import make_general_instruction
from simulations.run import simulate

ROOT = Path(__file__).resolve().parents[2]
GENERATED = 4  # evaluation.generation-examples


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_tiny_causal_lm_with_a_mixture_reports_generation_and_forgetting(
    tiny_llama: Path, tmp_path: Path
) -> None:
    general = write_jsonl(make_general_instruction(60, seed=5), tmp_path / "general.jsonl")
    config = load_config(
        ROOT / "examples" / "instruct.toml",
        [
            f"model.path='{tiny_llama}'",
            "model.max-length=96",
            f"data.mixture=[{{source='demo', weight=0.7}}, {{source='{general}', weight=0.3}}]",
            "data.demo-examples=60",
            "data.server-eval='demo'",
            "data.server-eval-examples=12",
            "data.general-eval='demo'",
            "data.general-eval-examples=12",
            f"evaluation.generation-examples={GENERATED}",
            "evaluation.max-new-tokens=6",
            "privacy.enabled=false",
            "federation.num-clients=2",
            "federation.clients-per-round=2",
            "federation.evaluate-clients=2",
            "federation.rounds=2",
            "training.local-steps=5",
            "training.lr=0.01",
            "training.threads=1",
        ],
    )
    out = tmp_path / "run"
    simulate(config, out)

    rows = _metrics(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows:  # central evaluation, every round including the untrained adapter
        assert r["eval_generated"] == GENERATED
        assert 0.0 <= r["eval_rouge_l"] <= 1.0 and 0.0 <= r["eval_exact_match"] <= 1.0
        assert 0.0 <= r["eval_bleu"] <= 100.0
    for r in rows[1:]:  # federated evaluation pools both clients' answers
        assert r["fed_eval_generated"] == 2 * GENERATED
        assert {"fed_eval_rouge_l", "fed_eval_bleu", "fed_eval_exact_match"} <= set(r)
    assert rows[2]["train_loss"] < rows[1]["train_loss"]

    forgetting = json.loads((out / "forgetting.json").read_text())
    assert forgetting["general_eval"] == "demo"
    assert (forgetting["before_round"], forgetting["after_round"]) == (0, 2)
    keys = {"loss", "perplexity", "rouge_l", "bleu", "exact_match"}
    assert keys <= set(forgetting["before"]) and keys <= set(forgetting["after"])
    assert forgetting["after"]["loss"] != forgetting["before"]["loss"]

    # Oracles: "before" is a fresh adapter, "after" a stock PeftModel of the saved adapter.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from common.adapters import build_adapter_model
    from common.data.pipeline import general_eval_data
    from common.evaluation import evaluate_run
    from common.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    data = general_eval_data(config, tok)
    assert data is not None and len(data) == 12
    before, _ = evaluate_run(build_adapter_model(config), tok, data.dataset, config)
    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), out / "adapter"
    )
    after, _ = evaluate_run(trained, tok, data.dataset, config)
    for name in keys:
        assert forgetting["before"][name] == pytest.approx(before[name], rel=1e-4, abs=1e-6)
        assert forgetting["after"][name] == pytest.approx(after[name], rel=1e-4, abs=1e-6)

    page = (out / "report.html").read_text()
    assert (out / "plot_generation.png").is_file()
    assert "Forgetting check" in page and "ROUGE-L F" in page
    assert "eval ROUGE-L" in page and "fed. eval exact match" in page
    assert "<dt>Strategy</dt><dd>fedavg</dd>" in page
    assert "<dt>PEFT method</dt><dd>lora</dd>" in page

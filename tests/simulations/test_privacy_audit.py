"""The empirical privacy audit: its figures against hand-computed oracles, canary planting,
a tiny end-to-end audit (report files and structure), and the real MiniLM audit (slow)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import load_config
from common.data.pipeline import client_data, partition_for, source_records, to_examples
from simulations.audit.canaries import make_canaries
from simulations.audit.metrics import (
    auc,
    auc_standard_error,
    average_ranks,
    dp_auc_bound,
    exposure,
    group_privacy,
    secret_rank,
)
from simulations.audit.plant import CLIENT_COLUMN, plant
from simulations.audit.run import NON_PRIVATE, AuditSpec, RunResult, run_audit, run_config, verdict

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["account", "billing", "cancellation", "shipping", "technical"]


# ------------------------------------------------------------------ figures vs oracles


def test_auc_matches_a_hand_computed_example() -> None:
    """Pairs won: 0.9 beats 3, 0.8 beats 3, 0.3 beats 0.1 and ties 0.3 -> 7.5 of 9."""
    assert auc([0.9, 0.8, 0.3], [0.5, 0.3, 0.1]) == pytest.approx(7.5 / 9)
    assert auc([2, 3], [0, 1]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1, 1, 1], [1, 1]) == 0.5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=12),
    st.lists(st.integers(-5, 5), min_size=1, max_size=12),
)
def test_auc_equals_the_pairwise_count(members: list[int], others: list[int]) -> None:
    """The rank formula is the brute-force count over every (member, non-member) pair."""
    wins = sum(
        1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(members, others)
    )
    assert auc(members, others) == pytest.approx(wins / (len(members) * len(others)))


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_auc_needs_both_groups() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        auc([], [1.0])


def test_auc_standard_error_hanley_mcneil() -> None:
    """AUC 0.5, 10 vs 10: q1 = q2 = 1/3, var = (1/4 + 9/12 + 9/12) / 100."""
    assert auc_standard_error(0.5, 10, 10) == pytest.approx(math.sqrt(1.75 / 100))


def test_exposure_and_rank() -> None:
    assert exposure(1, 8) == 3.0
    assert exposure(8, 8) == 0.0
    assert exposure(2, 5) == pytest.approx(math.log2(5) - 1)
    # the true secret (0.5) is beaten by 0.2 and tied with another 0.5: ranks 2 and 3 shared
    assert secret_rank(0.5, [0.5, 0.2, 0.7, 0.5]) == 2.5
    assert secret_rank(0.1, [0.1, 0.2, 0.7]) == 1.0
    # a model that cannot tell 4 candidates apart: mean rank 2.5, exposure log2(4/2.5)
    assert exposure(secret_rank(1.0, [1.0] * 4), 4) == pytest.approx(math.log2(4 / 2.5))
    with pytest.raises(ValueError):
        exposure(0, 5)


def test_dp_auc_bound_closed_forms() -> None:
    """δ = 0: the ROC region's area is e^ε / (1 + e^ε); ε = 0 allows only chance."""
    for eps in (0.5, 1.0, 3.0):
        assert dp_auc_bound(eps, 0.0) == pytest.approx(
            math.exp(eps) / (1 + math.exp(eps)), abs=1e-6
        )
    assert dp_auc_bound(0.0, 0.0) == pytest.approx(0.5, abs=1e-6)
    assert dp_auc_bound(20.0, 1e-5) == pytest.approx(1.0, abs=1e-6)
    assert group_privacy(1.0, 1e-5, 2) == pytest.approx((2.0, 2 * math.e * 1e-5))


# ------------------------------------------------------------------ canaries and planting


def test_canaries_are_deterministic_distinct_and_split() -> None:
    first = make_canaries(
        "sequence-classification", num_members=20, num_non_members=30, seed=7, labels=LABELS
    )
    again = make_canaries(
        "sequence-classification", num_members=20, num_non_members=30, seed=7, labels=LABELS
    )
    other = make_canaries(
        "sequence-classification", num_members=20, num_non_members=30, seed=8, labels=LABELS
    )
    assert first == again and first != other
    assert len(first.members) == 20 and len(first.non_members) == 30
    texts = [c.text for c in (*first.members, *first.non_members)]
    assert len(set(texts)) == 50
    assert {c.secret for c in first.members} <= set(LABELS)
    assert all(c.candidates == tuple(LABELS) for c in first.members)


def test_causal_lm_canaries_rank_the_true_pin_among_distinct_candidates() -> None:
    pair = make_canaries("causal-lm", num_members=3, num_non_members=3, seed=1, num_candidates=50)
    for canary in pair.members:
        assert len(canary.candidates) == 50 == len(set(canary.candidates))
        assert canary.candidates[0] == canary.secret and len(canary.secret) == 4
        assert canary.row("causal-lm")["output"].endswith(canary.secret)


def _tiny_config(tiny_bert: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        ROOT / "examples" / "audit.toml",
        [
            f"model.path='{tiny_bert}'",
            "data.demo-examples=60",
            "data.server-eval-examples=20",
            "partition.method='iid'",
            "federation.num-clients=2",
            "federation.clients-per-round=2",
            "federation.min-clients=2",
            "federation.rounds=1",
            "training.local-steps=2",
            "training.batch-size=8",
            "simulation.total-cpus=1",  # one Ray actor: one torch import per run, not two
            *extra,
        ],
    )


def test_planting_touches_only_the_chosen_client_and_is_deterministic(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Client 1 gets every canary (twice, repeats=2); client 0 keeps exactly its base rows."""
    from common.models import load_tokenizer

    base = _tiny_config(tiny_bert)
    canaries = make_canaries(
        "sequence-classification", num_members=5, num_non_members=5, seed=3, labels=LABELS
    )
    planted = plant(base, canaries.members, client=1, folder=tmp_path / "a", repeats=2)
    again = plant(base, canaries.members, client=1, folder=tmp_path / "b", repeats=2)
    assert planted.data_file.read_bytes() == again.data_file.read_bytes()

    config = planted.config
    assert config.partition.method == "natural" and config.partition.column == CLIENT_COLUMN
    assert config.data.client_eval_fraction == 0.0
    records = source_records(config)
    parts = partition_for(config, records, to_examples(config, records))
    base_records = source_records(base)
    base_parts = partition_for(base, base_records, to_examples(base, base_records))
    canary_texts = {c.text for c in canaries.members}
    for index, part in enumerate(parts):
        rows = [records[int(i)].data for i in part]
        planted_rows = [r for r in rows if r["text"] in canary_texts]
        if index == 1:
            assert sorted(r["text"] for r in planted_rows) == sorted(2 * list(canary_texts))
        else:
            assert planted_rows == []
        # the client's own rows are exactly its rows in the base federation
        own = sorted(r["text"] for r in rows if r["text"] not in canary_texts)
        assert own == sorted(base_records[int(i)].data["text"] for i in base_parts[index])
    assert not any(c.text in {r.data["text"] for r in records} for c in canaries.non_members)
    assert planted.client_rows == {0: len(base_parts[0]), 1: len(base_parts[1]) + 10}

    tokenizer = load_tokenizer(str(tiny_bert))
    sizes = [len(client_data(config, tokenizer, partition_id=i).train) for i in range(2)]
    assert sizes == [planted.client_rows[0], planted.client_rows[1]]


def test_plant_refuses_a_missing_client(tiny_bert: Path, tmp_path: Path) -> None:
    from common.errors import PrivatuneError

    with pytest.raises(PrivatuneError, match="federation.num-clients is 2"):
        plant(_tiny_config(tiny_bert), (), client=2, folder=tmp_path)


def test_audit_runs_differ_only_in_privacy(tiny_bert: Path) -> None:
    base = _tiny_config(tiny_bert, "privacy.noise-multiplier=0.7")
    plain, private = run_config(base, None), run_config(base, 1.0)
    assert plain.privacy.enabled is False
    assert private.privacy.enabled and private.privacy.target_epsilon == 1.0
    assert private.privacy.noise_multiplier is None
    a, b = plain.to_toml_dict(), private.to_toml_dict()
    a.pop("privacy"), b.pop("privacy")
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": 0}, "--canaries must be at least 1"),
        ({"repeats": 0}, "--repeats must be at least 1"),
        ({"epsilons": (8.0, -1.0)}, "--epsilon must be positive, got -1.0"),
        ({"min_auc": 0.3}, "--min-auc must be between 0.5 and 1"),
    ],
)
def test_audit_spec_rejects_bad_flags(kwargs: dict, message: str) -> None:
    from common.errors import PrivatuneError

    with pytest.raises(PrivatuneError, match=message):
        AuditSpec(**kwargs)


def _result(name: str, value: float, eps: float | None) -> RunResult:
    return RunResult(
        name=name, target_epsilon=eps, epsilon=eps, delta=1e-5, noise_multiplier=None,
        auc=value, auc_se=0.05, auc_bound=None, member_exposure=1.0, non_member_exposure=1.0,
        member_losses=[], non_member_losses=[], member_ranks=[], non_member_ranks=[],
        final_eval_accuracy=None, seconds=1.0, run_dir=name,
    )  # fmt: skip


def test_verdict_is_inconclusive_when_the_attack_fails_without_dp() -> None:
    weak = verdict([_result(NON_PRIVATE, 0.6, None), _result("dp-eps1", 0.5, 1.0)], 0.8)
    assert weak["conclusive"] is False and weak["text"].startswith("inconclusive")
    strong = verdict([_result(NON_PRIVATE, 0.95, None), _result("dp-eps1", 0.5, 1.0)], 0.8)
    assert strong["conclusive"] is True and "gap +0.45" in strong["text"]
    assert strong["violations"] == []
    leaky = _result("dp-eps1", 0.95, 1.0)
    leaky.auc_bound = dp_auc_bound(1.0, 1e-5)  # 0.73: an AUC of 0.95 ± 0.1 cannot happen
    broken = verdict([_result(NON_PRIVATE, 0.95, None), leaky], 0.8)
    assert broken["violations"] == ["dp-eps1"] and "VIOLATION" in broken["text"]


def test_causal_lm_scoring_ranks_each_candidate_by_its_own_loss(tiny_llama: Path) -> None:
    """Batched scoring of every candidate equals scoring each row alone (the oracle)."""
    import torch

    from common.adapters import build_adapter_model
    from common.data.pipeline import encode
    from common.data.readers import Record
    from common.losses import per_example_losses
    from common.models import load_tokenizer
    from simulations.audit.attack import score
    from simulations.audit.canaries import Canary, pin_response

    config = load_config(None, [f"model.path='{tiny_llama}'", "model.task='causal-lm'"])
    torch.manual_seed(0)
    model = build_adapter_model(config)
    with torch.no_grad():  # move LoRA B off zero so the adapter matters
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    model.eval()
    tokenizer = load_tokenizer(str(tiny_llama))
    words = ("billing", "shipping", "refund", "account", "order")
    canaries = [
        Canary(text="What is the pin of account invoice?", secret=words[i], candidates=words)
        for i in (0, 3)
    ]
    scores = score(model, tokenizer, config, canaries)
    for canary, loss, rank in zip(canaries, scores.losses, scores.ranks, strict=True):
        own = []
        for candidate in canary.candidates:
            row = {"instruction": canary.text, "output": pin_response(candidate)}
            examples = to_examples(config, [Record(data=row, source="t", line=1)], tokenizer)
            data = encode(config, examples, tokenizer, source="t").dataset
            with torch.no_grad():
                own.append(float(per_example_losses(model, data[:], "causal-lm")[0]))
        true = own[canary.candidates.index(canary.secret)]
        assert loss == pytest.approx(true, rel=1e-4)
        assert rank == 1 + sum(x < true for x in own) + (sum(x == true for x in own) - 1) / 2
    assert scores.num_candidates == 5
    assert scores.exposures == [exposure(r, 5) for r in scores.ranks]


# ------------------------------------------------------------------ end to end


def test_tiny_audit_writes_the_report(tiny_bert: Path, tmp_path: Path) -> None:
    """Two tiny runs (no DP, ε = 8): audit.json's structure, the ledger's ε, the page, plots."""
    out = tmp_path / "audit"
    spec = AuditSpec(members=6, non_members=8, client=0, epsilons=(8.0,), seed=5)
    result = run_audit(_tiny_config(tiny_bert), out, spec)
    saved = json.loads((out / "audit.json").read_text())
    assert [r["name"] for r in saved["runs"]] == [NON_PRIVATE, "dp-eps8"]
    plain, private = saved["runs"]
    for run in saved["runs"]:
        assert len(run["member_losses"]) == 6 and len(run["non_member_losses"]) == 8
        assert 0.0 <= run["auc"] <= 1.0
        assert 0.0 <= run["member_exposure"] <= math.log2(5) and run["num_candidates"] == 5
        assert (out / run["run_dir"] / "adapter" / "adapter_model.safetensors").is_file()
    assert plain["epsilon"] is None and plain["auc_bound"] is None
    ledger = json.loads((out / private["run_dir"] / "privacy_ledger.json").read_text())
    assert private["epsilon"] == pytest.approx(ledger["clients"]["0"]["epsilon"], rel=1e-9)
    assert 0 < private["epsilon"] <= 8.0 + 1e-6
    assert private["auc_bound"] == pytest.approx(dp_auc_bound(private["epsilon"], 1e-5))
    assert saved["verdict"]["conclusive"] == (plain["auc"] >= spec.min_auc)
    page = (out / "audit.html").read_text()
    assert "privacy audit" in page and "no DP" in page and f"{private['epsilon']:.2f}" in page
    for name in ("plot_audit_tradeoff.png", "plot_audit_losses.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(result["report"]) == out / "audit.html"
    # the attack's AUC is recomputable from the stored losses
    assert plain["auc"] == pytest.approx(
        auc(-np.array(plain["member_losses"]), -np.array(plain["non_member_losses"]))
    )


def test_audit_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "privatune.cli", "audit", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0
    for flag in ("--epsilon", "--canaries", "--repeats", "--min-auc", "--output"):
        assert flag in done.stdout


def test_audit_command_reaches_its_flag_checks(tmp_path: Path) -> None:
    """The command's own path (default config, spec, run) up to the flag check: bad
    flags are bad input, exit 2, nothing written."""
    out = tmp_path / "audit"
    done = subprocess.run(
        [sys.executable, "-m", "privatune.cli", "audit", "--output", str(out), "--canaries", "0"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--canaries must be at least 1, got 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.slow
def test_minilm_audit_shows_the_gap(tmp_path: Path) -> None:
    """The README command on the packaged MiniLM: the attack works without DP, not with it."""
    out = tmp_path / "audit"
    done = subprocess.run(
        [sys.executable, "-m", "privatune.cli", "audit", "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((out / "audit.json").read_text())
    assert saved["verdict"]["conclusive"] is True and saved["verdict"]["violations"] == []
    runs = {r["name"]: r for r in saved["runs"]}
    assert runs[NON_PRIVATE]["auc"] >= 0.8
    for name, target in (("dp-eps8", 8.0), ("dp-eps1", 1.0)):
        run = runs[name]
        assert run["epsilon"] <= target + 1e-6
        assert runs[NON_PRIVATE]["auc"] - run["auc"] >= 0.2
        assert run["auc"] <= run["auc_bound"]
    assert runs["dp-eps1"]["auc"] <= 0.7

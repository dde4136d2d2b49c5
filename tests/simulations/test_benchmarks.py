"""The benchmark scripts still run, and the parts with an oracle give the oracle's answer.

Times are never asserted (the machine is shared); byte counts, Flower's share rule, the
fortunes sample and the memory sampler are. The whole quick suite is one slow test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import load_config
from simulations.benchmarks import common, dp_cost, scale, traffic, utility
from simulations.benchmarks.secagg_cost import dropout_tolerance

ROOT = Path(__file__).resolve().parents[2]


def test_dropout_tolerance_follows_flowers_share_rule() -> None:
    """Flower: shares = round(f·n), made odd below n; threshold = round(0.66·shares)."""
    assert dropout_tolerance(20, 1.0) == {"shares": 20, "threshold": 13, "tolerated_dropouts": 7}
    assert dropout_tolerance(20, 0.35) == {"shares": 7, "threshold": 5, "tolerated_dropouts": 2}
    assert dropout_tolerance(20, 0.2) == {"shares": 5, "threshold": 3, "tolerated_dropouts": 2}
    assert dropout_tolerance(5, 0.2)["shares"] == 5  # ≤ 2 shares means everyone
    assert dropout_tolerance(20, 9.0)["shares"] == 9


def test_table_and_goals() -> None:
    text = common.table(["a", "ratio"], [("x", 0.91234), ("long name", None)])
    assert text.splitlines() == ["        a  ratio", "        x  0.912", "long name      —"]
    assert common.goal_text(0.9, ">= 0.90") == "met"
    assert common.goal_text(1.2, "<= 1.10") == "missed"


def _fake_fortunes(folder: Path, per_file: int) -> Path:
    for category in utility.CATEGORIES:
        entries = [f"{category} saying number {i} with some words" for i in range(per_file)]
        entries += ["too short", "x" * 400]  # outside 20..300 characters: never sampled
        (folder / category).write_text("\n%\n".join(entries) + "\n%\n")
    return folder


def test_fortunes_sample_is_balanced_deterministic_and_disjoint(tmp_path: Path) -> None:
    for name in ("src", "a", "b"):
        (tmp_path / name).mkdir()
    source = _fake_fortunes(tmp_path / "src", 30)
    train, test = utility.write_split(source, tmp_path / "a", per_category=20)
    again, _ = utility.write_split(source, tmp_path / "b", per_category=20)
    assert train.read_text() == again.read_text()
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    held = [json.loads(x) for x in test.read_text().splitlines()]
    for category in utility.CATEGORIES:
        assert sum(r["label"] == category for r in rows) == 16
        assert sum(r["label"] == category for r in held) == 4
    assert not {r["text"] for r in rows} & {r["text"] for r in held}
    assert all(20 <= len(r["text"]) <= 300 for r in rows + held)


def test_tree_memory_counts_child_processes() -> None:
    """A child holding 200 MB raises the tree's resident total by about that much."""
    before = scale.tree_rss()
    child = subprocess.Popen(
        [sys.executable, "-c", "b = bytearray(200 * 2**20); import time; time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 20
        while scale.tree_rss() - before < 150 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scale.tree_rss() - before >= 150 * 2**20
    finally:
        child.kill()
        child.wait()


def test_dp_cost_quick_runs_both_steps(tmp_path: Path, one_torch_thread: None) -> None:
    out = tmp_path / "dp.json"
    assert dp_cost.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert len(result["plain_step_seconds"]) == len(result["dp_step_seconds"]) == 2
    assert result["ratio"] > 0


def test_traffic_quick_counts_protocol_bytes(tmp_path: Path) -> None:
    """Tiny model: LoRA r=8 on query/value of 2 layers of width 32 plus a 5-way head."""
    out = tmp_path / "traffic.json"
    assert traffic.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    lora = 2 * 2 * (8 * 32 + 32 * 8) + (32 * 5 + 5)
    ffa = 2 * 2 * (32 * 8) + (32 * 5 + 5)
    assert report["raw_adapter_bytes"] == 4 * lora
    shares = {s["variant"]: s["adapter_bytes"] for s in report["adapter_share"]}
    assert shares == {"lora": 4 * lora, "ffa": 4 * ffa}
    plain, secure = report["uplink"]
    # Plain: the delta plus metrics; SecAgg+: masked values sent as 32 bits (as many as the
    # fp32 delta; common/secagg_wire.py) plus the key exchange, which is large next to
    # this tiny adapter. Flower's own int64 encoding would put it above 2.
    assert 1.0 < plain["ratio"] < 1.5
    assert plain["ratio"] < secure["ratio"] < 2.0


@pytest.mark.slow
def test_quick_suite_runs_every_benchmark(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "simulations.benchmarks", "--quick", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "suite.json").read_text())
    assert set(summary["benchmarks"]) == set(
        ["dp_cost", "traffic", "secagg_cost", "efficiency", "scale", "utility"]
    )
    assert all(b["status"] == "ok" and b["figures"] for b in summary["benchmarks"].values())


def test_utility_recipes_load_and_target_only_the_top_layers(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Every run's overrides are valid keys, and the adapter sits in the named layers only."""
    from common.adapters import adapter_spec, build_adapter_model

    assert utility.top_layer_targets(str(tiny_bert), layers=1) == [
        "layer.1.attention.self.query",
        "layer.1.attention.self.value",
    ]
    assert len(utility.top_layer_targets(str(tiny_bert), layers=5)) == 4  # 2 layers in all
    (tmp_path / "src").mkdir()
    train, test = utility.write_split(_fake_fortunes(tmp_path / "src", 30), tmp_path, 20)
    for name, recipe in utility.RUNS.items():
        config = utility.config(train, test, model=str(tiny_bert), recipe=recipe)
        assert config.federation.num_clients == recipe.clients, name
        assert config.privacy.enabled == name.startswith("dp-"), name
    top = json.dumps(utility.top_layer_targets(str(tiny_bert), 1))
    one_layer = load_config(None, [f"model.path='{tiny_bert}'", f"lora.target-modules={top}"])
    lora = [
        n for n in adapter_spec(build_adapter_model(one_layer, num_labels=5)).names if "lora_" in n
    ]
    assert len(lora) == 4 and all(".layer.1.attention.self." in n for n in lora), lora

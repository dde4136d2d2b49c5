"""The embedded demo data is deterministic, balanced overall and skewed per organisation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from common.data.demo import (
    DEMO_LABELS,
    DEMO_ORGS,
    make_demo_classification,
    make_demo_instruction,
    write_jsonl,
)
from common.data.formats import to_classification, to_instruction
from common.data.readers import read_records


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return make_demo_classification(3000, seed=0)


def test_deterministic_for_a_seed(rows: list[dict]) -> None:
    assert make_demo_classification(3000, seed=0) == rows
    assert make_demo_classification(3000, seed=1) != rows


def test_row_shape(rows: list[dict]) -> None:
    assert len(rows) == 3000
    assert all(set(r) == {"text", "label", "org"} for r in rows)
    assert {r["label"] for r in rows} == set(DEMO_LABELS)
    assert {r["org"] for r in rows} == set(DEMO_ORGS)
    assert Counter(r["org"] for r in rows) == {org: 600 for org in DEMO_ORGS}
    assert len({r["text"] for r in rows}) > 0.95 * len(rows)  # varied, not a few templates


def test_labels_balanced_overall(rows: list[dict]) -> None:
    counts = Counter(r["label"] for r in rows)
    assert min(counts.values()) >= 0.10 * len(rows)


def test_each_org_has_its_own_dominant_label(rows: list[dict]) -> None:
    dominant = {}
    for org in DEMO_ORGS:
        counts = Counter(r["label"] for r in rows if r["org"] == org)
        label, count = counts.most_common(1)[0]
        assert count >= 0.35 * sum(counts.values()), org
        dominant[org] = label
    assert len(set(dominant.values())) == len(DEMO_ORGS)


def test_org_vocabulary_differs(rows: list[dict]) -> None:
    bank = " ".join(r["text"].lower() for r in rows if r["org"] == "bank")
    hospital = " ".join(r["text"].lower() for r in rows if r["org"] == "hospital")
    assert "patient portal" in hospital and "patient portal" not in bank


def test_not_solvable_by_one_keyword(rows: list[dict]) -> None:
    """Category keywords appear in other categories' tickets too."""
    for keyword, label in [
        ("cancel", "cancellation"),
        ("refund", "billing"),
        ("order", "shipping"),
    ]:
        others = [r for r in rows if keyword in r["text"].lower() and r["label"] != label]
        assert len(others) >= 20, keyword


def test_num_orgs_and_small_sizes() -> None:
    small = make_demo_classification(10, seed=0, num_orgs=2)
    assert len(small) == 10
    assert {r["org"] for r in small} == {"bank", "hospital"}
    many = make_demo_classification(70, seed=0, num_orgs=7)
    assert len({r["org"] for r in many}) == 7


def test_demo_rows_pass_validation(tmp_path: Path, rows: list[dict]) -> None:
    path = write_jsonl(rows[:50], tmp_path / "sub" / "demo.jsonl")
    examples = to_classification(read_records(path))
    assert [e.label for e in examples] == [r["label"] for r in rows[:50]]
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0]) == rows[0]


def test_instruction_demo(tmp_path: Path) -> None:
    rows = make_demo_instruction(200, seed=0)
    assert rows == make_demo_instruction(200, seed=0)
    assert len(rows) == 200
    assert all(set(r) == {"instruction", "input", "output"} for r in rows)
    outputs = Counter(r["output"] in DEMO_LABELS for r in rows)
    assert outputs[True] >= 100 and outputs[False] >= 40
    for row in rows:
        if row["output"] not in DEMO_LABELS:  # extraction: the answer is copied from the input
            assert row["output"] in row["input"]
    examples = to_instruction(read_records(write_jsonl(rows, tmp_path / "instr.jsonl")))
    assert examples[0].prompt.startswith("### Instruction:\n")
    assert "### Input:\n" in examples[0].prompt
    assert [e.response for e in examples] == [r["output"] for r in rows]

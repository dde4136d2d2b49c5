"""Partitioners cover every index once, are deterministic, and produce the intended skew."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.data.partition import PARTITIONERS, label_skew, partition_indices
from common.errors import DataError

# 5 labels x 40 rows, interleaved so that label order and index order differ.
LABELS = [f"c{i % 5}" for i in range(200)]


def _assert_exact_cover(parts: list[list[int]], n: int) -> None:
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(n))
    assert all(part == sorted(part) for part in parts)


def test_registry_names() -> None:
    assert sorted(PARTITIONERS) == ["dirichlet", "iid", "natural", "shards"]


def test_iid_sizes_within_one() -> None:
    parts = partition_indices("iid", num_partitions=7, seed=3, num_examples=103)
    _assert_exact_cover(parts, 103)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == 103


def test_iid_size_from_labels_or_groups() -> None:
    assert len(partition_indices("iid", num_partitions=2, seed=0, labels=LABELS)[0]) == 100
    parts = partition_indices("iid", num_partitions=2, seed=0, groups=["g"] * 10)
    assert [len(p) for p in parts] == [5, 5]


def test_dirichlet_low_alpha_is_much_more_skewed_than_iid() -> None:
    iid = partition_indices("iid", num_partitions=5, seed=0, labels=LABELS)
    skewed = partition_indices("dirichlet", num_partitions=5, seed=0, labels=LABELS, alpha=0.1)
    mild = partition_indices("dirichlet", num_partitions=5, seed=0, labels=LABELS, alpha=100.0)
    _assert_exact_cover(skewed, 200)
    _assert_exact_cover(mild, 200)
    assert label_skew(iid, LABELS) < 0.2
    assert label_skew(mild, LABELS) < 0.15
    assert label_skew(skewed, LABELS) > label_skew(iid, LABELS) + 0.3


def test_dirichlet_respects_min_size() -> None:
    parts = partition_indices(
        "dirichlet", num_partitions=8, seed=1, labels=LABELS, alpha=0.1, min_size=10
    )
    assert min(len(p) for p in parts) >= 10
    _assert_exact_cover(parts, 200)


def test_dirichlet_impossible_min_size_says_what_to_change() -> None:
    with pytest.raises(DataError, match="lower num-partitions or raise alpha"):
        partition_indices(
            "dirichlet", num_partitions=20, seed=0, labels=LABELS, alpha=0.01, min_size=9
        )
    with pytest.raises(DataError, match="lower num-partitions"):
        partition_indices("dirichlet", num_partitions=300, seed=0, labels=LABELS)


def test_shards_limit_labels_per_partition() -> None:
    parts = partition_indices(
        "shards", num_partitions=5, seed=0, labels=LABELS, shards_per_partition=2
    )
    _assert_exact_cover(parts, 200)
    assert [len(p) for p in parts] == [40] * 5
    for part in parts:
        assert len({LABELS[i] for i in part}) <= 2
    assert label_skew(parts, LABELS) > 0.55  # at most 2 of 5 labels: TV >= 0.6


def test_natural_one_partition_per_group() -> None:
    groups = ["bank", "zoo", "bank", "clinic", "zoo", "bank"]
    parts = partition_indices("natural", num_partitions=3, seed=0, groups=groups)
    assert parts == [[0, 2, 5], [3], [1, 4]]  # bank, clinic, zoo


def test_natural_wrong_count_lists_groups() -> None:
    with pytest.raises(DataError) as info:
        partition_indices("natural", num_partitions=2, seed=0, groups=["b", "a", "c"])
    message = str(info.value)
    assert "there are 3 (a, b, c)" in message and "set num-partitions to 3" in message


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_deterministic_for_a_seed(method: str) -> None:
    first = partition_indices(method, num_partitions=4, seed=42, labels=LABELS)
    again = partition_indices(method, num_partitions=4, seed=42, labels=LABELS)
    other = partition_indices(method, num_partitions=4, seed=43, labels=LABELS)
    assert first == again
    assert first != other


def test_pinned_iid_result() -> None:
    parts = partition_indices("iid", num_partitions=3, seed=0, num_examples=8)
    assert parts == [[2, 3, 4], [0, 5, 6], [1, 7]]


def test_unknown_method_lists_registry() -> None:
    with pytest.raises(DataError, match="unknown partition method 'random'.*iid, dirichlet"):
        partition_indices("random", num_partitions=2, seed=0, labels=LABELS)


def test_method_needing_labels() -> None:
    with pytest.raises(DataError, match="'dirichlet' needs the rows' labels"):
        partition_indices("dirichlet", num_partitions=2, seed=0, num_examples=10)
    with pytest.raises(DataError, match="'natural' needs the rows' groups"):
        partition_indices("natural", num_partitions=2, seed=0, labels=LABELS)


def test_too_many_partitions_for_iid() -> None:
    with pytest.raises(DataError, match="cannot give each of 5 partitions"):
        partition_indices("iid", num_partitions=5, seed=0, num_examples=3)


def test_label_skew_extremes() -> None:
    labels = ["a", "b"] * 4
    assert label_skew([[0, 1, 2, 3], [4, 5, 6, 7]], labels) == pytest.approx(0.0)
    assert label_skew([[0, 2, 4, 6], [1, 3, 5, 7]], labels) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["iid", "shards", "dirichlet"]),
    num_partitions=st.integers(1, 8),
    per_partition=st.integers(2, 12),
    num_labels=st.integers(1, 6),
    shards=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_every_index_exactly_once(
    method: str,
    num_partitions: int,
    per_partition: int,
    num_labels: int,
    shards: int,
    seed: int,
    data: st.DataObject,
) -> None:
    n = num_partitions * per_partition * shards
    labels = data.draw(
        st.lists(st.sampled_from([f"l{i}" for i in range(num_labels)]), min_size=n, max_size=n)
    )
    parts = partition_indices(
        method,
        num_partitions=num_partitions,
        seed=seed,
        labels=labels,
        alpha=1.0,
        shards_per_partition=shards,
    )
    assert len(parts) == num_partitions
    _assert_exact_cover(parts, n)
    assert min(len(p) for p in parts) >= 1

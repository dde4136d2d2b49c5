"""Split one dataset among simulated clients, with controllable heterogeneity.

Real federations are non-IID: each organisation sees a different mix of classes.  The
simulation reproduces that from a single dataset with the standard schemes from the
federated-learning literature, so results are comparable with published ones:

* ``iid`` - uniform random split (the optimistic baseline);
* ``dirichlet`` - per-class Dirichlet(alpha) proportions (Hsu et al., 2019), lower alpha
  means more label skew;
* ``shards`` - sort by label and deal out contiguous shards (McMahan et al., 2017);
* ``natural`` - one client per value of an ownership column (e.g. ``org``).

All partitioners return every index exactly once, sorted within each partition, and
are deterministic for a seed so that a simulation can be re-run exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.errors import DataError

__all__ = [
    "PARTITIONERS",
    "PartitionRequest",
    "Partitioner",
    "label_skew",
    "partition_indices",
]

#: How many Dirichlet draws to try before giving up on the minimum partition size.
DIRICHLET_MAX_TRIES = 1000


@dataclass(frozen=True)
class PartitionRequest:
    """Everything a partitioner may use; each one reads only the fields it needs."""

    num_examples: int
    num_partitions: int
    labels: Sequence[str] | None
    groups: Sequence[str] | None
    alpha: float
    shards_per_partition: int
    min_size: int


@dataclass(frozen=True)
class Partitioner:
    """A named partitioning scheme and the per-row column it requires, if any."""

    name: str
    needs: str | None  # "labels", "groups" or None
    split: Callable[[PartitionRequest, np.random.Generator], list[np.ndarray]]


def _iid(request: PartitionRequest, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(request.num_examples)
    return list(np.array_split(order, request.num_partitions))


def _buckets(values: Sequence[str]) -> tuple[list[str], list[np.ndarray]]:
    """Distinct values (sorted, so the seed alone decides the split) and their row indices."""
    buckets: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        buckets.setdefault(value, []).append(index)
    keys = sorted(buckets, key=str)
    return keys, [np.asarray(buckets[key], dtype=np.int64) for key in keys]


def _dirichlet(request: PartitionRequest, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, split its rows among partitions by proportions ~ Dirichlet(alpha).

    Draws are repeated until every partition gets ``min_size`` rows.  Only the counts are
    computed per try, so retries are cheap; rows are shuffled once a draw is accepted.
    """
    assert request.labels is not None
    k, n, min_size = request.num_partitions, request.num_examples, request.min_size
    _, classes = _buckets(request.labels)
    if n < k * min_size:
        raise _too_small("dirichlet", request)
    for _ in range(DIRICHLET_MAX_TRIES):
        cuts_per_class = []
        sizes = np.zeros(k, dtype=np.int64)
        for rows in classes:
            proportions = rng.dirichlet(np.full(k, request.alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(rows)).astype(np.int64)
            sizes += np.diff(np.concatenate(([0], cuts, [len(rows)])))
            cuts_per_class.append(cuts)
        if sizes.min() >= min_size:
            break
    else:
        raise DataError(
            f"dirichlet partitioning could not give each of {k} partitions at least "
            f"{min_size} example(s) in {DIRICHLET_MAX_TRIES} tries ({n} examples, "
            f"{len(classes)} labels, alpha={request.alpha}); lower num-partitions or raise "
            "alpha"
        )
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for rows, cuts in zip(classes, cuts_per_class, strict=True):
        for part, chunk in zip(parts, np.split(rng.permutation(rows), cuts), strict=True):
            part.append(chunk)
    return [np.concatenate(chunks) for chunks in parts]


def _shards(request: PartitionRequest, rng: np.random.Generator) -> list[np.ndarray]:
    """Sort by label, cut into equal shards, give each partition random shards.

    A shard that straddles a label boundary holds two labels, so a partition has at most
    ``shards_per_partition`` labels only when shard edges fall on label boundaries.
    """
    assert request.labels is not None
    k, per = request.num_partitions, request.shards_per_partition
    order = np.concatenate(_buckets(request.labels)[1])
    shards = np.array_split(order, k * per)
    dealt = rng.permutation(k * per)
    return [np.concatenate([shards[s] for s in dealt[j * per : (j + 1) * per]]) for j in range(k)]


def _natural(request: PartitionRequest, rng: np.random.Generator) -> list[np.ndarray]:
    """One partition per distinct group value, in sorted order; the seed is not used."""
    assert request.groups is not None
    names, buckets = _buckets(request.groups)
    if len(buckets) != request.num_partitions:
        shown = ", ".join(map(str, names[:20])) + (", ..." if len(names) > 20 else "")
        raise DataError(
            f"natural partitioning makes one partition per distinct group value, and there "
            f"are {len(names)} ({shown}), but num-partitions is {request.num_partitions}; "
            f"set num-partitions to {len(names)} or use another partition method"
        )
    for name, rows in zip(names, buckets, strict=True):
        if len(rows) < request.min_size:
            raise DataError(
                f"natural partitioning: group {name!r} has {len(rows)} example(s), fewer than "
                f"the minimum {request.min_size}; add data for it or drop the group"
            )
    return buckets


PARTITIONERS: dict[str, Partitioner] = {
    p.name: p
    for p in (
        Partitioner("iid", None, _iid),
        Partitioner("dirichlet", "labels", _dirichlet),
        Partitioner("shards", "labels", _shards),
        Partitioner("natural", "groups", _natural),
    )
}


def _too_small(method: str, request: PartitionRequest) -> DataError:
    return DataError(
        f"{method} partitioning cannot give each of {request.num_partitions} partitions at "
        f"least {request.min_size} example(s) from {request.num_examples} examples; lower "
        "num-partitions or use more data"
    )


def _num_examples(
    num_examples: int | None, labels: Sequence[str] | None, groups: Sequence[str] | None
) -> int:
    sizes = {
        name: len(values)
        for name, values in (("labels", labels), ("groups", groups))
        if values is not None
    }
    if num_examples is not None:
        sizes["num_examples"] = num_examples
    if not sizes:
        raise ValueError("partition_indices needs num_examples, labels or groups")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inconsistent dataset sizes: {sizes}")
    return next(iter(sizes.values()))


def partition_indices(
    method: str,
    *,
    num_partitions: int,
    seed: int,
    labels: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    alpha: float = 0.5,
    shards_per_partition: int = 2,
    min_size: int = 1,
    num_examples: int | None = None,
) -> list[list[int]]:
    """Split row indices ``0..n-1`` into ``num_partitions`` lists with the named method.

    ``n`` is ``num_examples`` or the length of ``labels``/``groups`` (they must agree).
    Every index appears in exactly one partition, each partition is sorted and holds at
    least ``min_size`` rows, and the result depends only on the inputs and ``seed``.
    """
    partitioner = PARTITIONERS.get(method)
    if partitioner is None:
        raise DataError(f"unknown partition method {method!r}; valid: {', '.join(PARTITIONERS)}")
    if num_partitions < 1:
        raise DataError(f"num-partitions must be at least 1, got {num_partitions}")
    if alpha <= 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    if shards_per_partition < 1:
        raise DataError(f"shards-per-partition must be at least 1, got {shards_per_partition}")
    request = PartitionRequest(
        num_examples=_num_examples(num_examples, labels, groups),
        num_partitions=num_partitions,
        labels=labels,
        groups=groups,
        alpha=alpha,
        shards_per_partition=shards_per_partition,
        min_size=min_size,
    )
    if partitioner.needs is not None and getattr(request, partitioner.needs) is None:
        column = "partition.column" if partitioner.needs == "groups" else "data.label-field"
        raise DataError(
            f"partition method {method!r} needs the rows' {partitioner.needs} (see {column})"
        )
    parts = partitioner.split(request, np.random.default_rng(seed))
    result = [sorted(int(i) for i in part) for part in parts]
    for part in result:
        if len(part) < min_size:
            raise _too_small(method, request)
    return result


def label_skew(partitions: Sequence[Sequence[int]], labels: Sequence[str]) -> float:
    """Mean total-variation distance between each partition's label mix and the global one.

    0 means every partition looks like the whole dataset (IID); values near 1 mean
    partitions hold mostly labels that are rare overall.  Empty partitions are skipped.
    """
    total = Counter(labels)
    n = sum(total.values())
    distances = []
    for part in partitions:
        if not part:
            continue
        local = Counter(labels[i] for i in part)
        distances.append(0.5 * sum(abs(local[c] / len(part) - total[c] / n) for c in total))
    return float(np.mean(distances)) if distances else 0.0

"""Multi-task mixtures: several instruction datasets sampled by weight into one pool.

Fine-tuning on one narrow task makes a model forget what it could do before; mixing
general instruction data back in (replay) is the usual remedy. ``[[data.mixture]]``
lists the datasets and their weights; the pool drawn here is then partitioned among the
simulated clients like a single ``data.source`` would be.

Sampling is without replacement: a row repeated in a client's data would be trained on
twice and, under DP-SGD, cost twice the privacy budget the ledger reports for "one
example". So the pool is at most as large as the scarcest component allows at its
weight, and asking for more (``data.mixture-examples``) is an error that says by how
much. Everything is deterministic in ``training.seed``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from common.config import MixtureComponent, RunConfig
from common.data.demo import make_demo_instruction
from common.data.formats import to_instruction
from common.data.general import GENERAL_DEMO, make_general_instruction
from common.data.readers import Record, read_records
from common.errors import DataError

DEMO = "demo"
GENERAL_TRAIN_SEED_OFFSET = 20_011  # training replay rows never equal the general eval draw


def _embedded(rows: list[dict[str, str]], name: str) -> list[Record]:
    return [Record(data=row, source=name, line=i + 1) for i, row in enumerate(rows)]


def component_records(config: RunConfig, index: int) -> list[Record]:
    """Every row of ``data.mixture[index]``, checked to be instruction rows."""
    component: MixtureComponent = config.data.mixture[index]
    key = f"data.mixture[{index}].source"
    seed, size = config.training.seed, config.data.demo_examples
    try:
        if component.source == DEMO:
            records = _embedded(make_demo_instruction(size, seed=seed), DEMO)
        elif component.source == GENERAL_DEMO:
            rows = make_general_instruction(size, seed=seed + GENERAL_TRAIN_SEED_OFFSET)
            records = _embedded(rows, GENERAL_DEMO)
        else:
            records = read_records(component.source, component.format)
        to_instruction(records)  # every component must hold instruction rows
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from None
    if not records:
        raise DataError(f"{key}: {component.source} has no rows")
    return records


def allocation(sizes: list[int], weights: list[float], total: int | None) -> list[int]:
    """Rows taken from each component: shares proportional to the weights (largest
    remainder), never more than a component holds.

    ``total`` None takes the largest pool every component can supply without repeats.
    """
    shares = [Fraction(w).limit_denominator(10**9) for w in weights]
    whole = sum(shares)
    shares = [s / whole for s in shares]
    if total is None:
        total = min(math.floor(n / s) for n, s in zip(sizes, shares, strict=True))
    exact = [s * total for s in shares]
    taken = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (taken[i] - exact[i], i))
    for i in by_remainder[: total - sum(taken)]:
        taken[i] += 1
    return taken


def mixture_records(config: RunConfig) -> list[Record]:
    """The mixed pool, shuffled; each row keeps its file and line for error messages."""
    data = config.data
    components = [component_records(config, i) for i in range(len(data.mixture))]
    sizes = [len(c) for c in components]
    taken = allocation(sizes, [c.weight for c in data.mixture], data.mixture_examples)
    for i, (need, have) in enumerate(zip(taken, sizes, strict=True)):
        if need > have:
            raise DataError(
                f"data.mixture[{i}]: its weight asks for {need} of the {data.mixture_examples} "
                f"rows of data.mixture-examples but {data.mixture[i].source} holds {have} "
                "(rows are never repeated); lower data.mixture-examples or leave it unset"
            )
    if sum(taken) == 0:
        raise DataError("data.mixture: the weights leave no rows to train on")
    seed = config.training.seed
    pool: list[Record] = []
    for i, (records, need) in enumerate(zip(components, taken, strict=True)):
        picked = np.random.default_rng([seed, i]).choice(len(records), size=need, replace=False)
        pool.extend(records[j] for j in sorted(picked.tolist()))
    order = np.random.default_rng([seed, len(components)]).permutation(len(pool))
    return [pool[j] for j in order.tolist()]

"""Heterogeneous LoRA ranks (HetLoRA-style zero-padding), as pure array operations.

The global adapter has rank ``lora.r``. Client ``k`` trains rank ``r_k = lora.ranks[k mod
len]`` ≤ ``lora.r``: it keeps the first ``r_k`` rows of every ``lora_A`` (r × in) and the
first ``r_k`` columns of every ``lora_B`` (out × r) of the global adapter, trains them,
and its update is zero-padded back to rank ``lora.r`` before averaging. Client ``k`` uses
``lora_alpha · r_k / r``, so its scaling alpha/r equals the global one: the truncated
adapter is exactly the first ``r_k`` rank-one components of the global update B·A.

Zero-padded averaging is what HetLoRA (Cho et al., 2024) does before its optional
sparsity weighting (not implemented here). A component k is averaged over every client,
so clients without it pull it towards zero in proportion to their weight. Like plain
LoRA FedAvg it averages A and B separately, so it is not the mean of the clients' B·A.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.config import RunConfig


def rank_axis(name: str) -> int | None:
    """Which axis of an adapter array is LoRA's rank: 0 for A (r × in), 1 for B (out × r)."""
    if ".lora_A." in name:
        return 0
    if ".lora_B." in name:
        return 1
    return None


def client_rank(config: RunConfig, partition_id: int | None) -> int:
    """This client's rank: lora.ranks by partition (cycling), the global rank otherwise."""
    ranks = config.lora.ranks
    if not ranks or partition_id is None:
        return config.lora.r
    return int(ranks[partition_id % len(ranks)])


def client_config(config: RunConfig, rank: int) -> RunConfig:
    """The run config as a client of ``rank`` builds its model: rank and alpha scaled."""
    if rank == config.lora.r:
        return config
    lora = config.lora.model_copy(
        update={"r": rank, "alpha": config.lora.alpha * rank / config.lora.r}
    )
    return config.model_copy(update={"lora": lora})


def truncated_shape(name: str, shape: Sequence[int], rank: int) -> tuple[int, ...]:
    axis = rank_axis(name)
    out = list(shape)
    if axis is not None:
        out[axis] = min(rank, out[axis])
    return tuple(out)


def truncate(names: Sequence[str], arrays: Sequence[np.ndarray], rank: int) -> list[np.ndarray]:
    """The global adapter as a rank-``rank`` client holds it (copies)."""
    out = []
    for name, array in zip(names, arrays, strict=True):
        axis = rank_axis(name)
        array = np.asarray(array)
        if axis == 0:
            array = array[:rank, :]
        elif axis == 1:
            array = array[:, :rank]
        out.append(np.array(array, dtype=np.float32, copy=True))
    return out


def pad(
    names: Sequence[str], arrays: Sequence[np.ndarray], shapes: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """Zero-pad a client's arrays to the global ``shapes`` (rank axes only)."""
    out = []
    for name, array, shape in zip(names, arrays, shapes, strict=True):
        array = np.asarray(array, dtype=np.float32)
        if tuple(array.shape) == tuple(shape):
            out.append(array)
            continue
        if rank_axis(name) is None:
            raise ValueError(f"{name}: shape {array.shape}, expected {tuple(shape)}")
        full = np.zeros(tuple(shape), dtype=np.float32)
        full[tuple(slice(0, n) for n in array.shape)] = array
        out.append(full)
    return out

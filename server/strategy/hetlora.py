"""HetLoRA: FedAvg over clients of different LoRA ranks, by zero-padding to the global rank.

Clients truncate the global adapter to their own rank (``common/hetlora.py``) and send
their delta at that rank with the metric ``lora_rank``; this strategy checks the shapes
against that rank, zero-pads to the global rank and averages as FedAvg does. Under
SecAgg+ clients pad before masking (SecAgg+ sums vectors of one length), the strategy
receives the padded sum, and the result is the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.adapters import AdapterSpec, check_arrays
from common.errors import UpdateRejected
from common.hetlora import pad, rank_axis, truncated_shape
from server.strategy.fedavg import DeltaFedAvg

RANK_METRIC = "lora_rank"


class HetLoRAFedAvg(DeltaFedAvg):
    """DeltaFedAvg whose clients may send rank-truncated LoRA deltas."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ranks = {
            shape[axis]
            for name, shape in zip(self.spec.names, self.spec.shapes, strict=True)
            if (axis := rank_axis(name)) is not None
        }
        if len(ranks) != 1:
            raise ValueError(f"hetlora needs one global LoRA rank, the adapter has {ranks}")
        self.max_rank = ranks.pop()

    def to_global_layout(self, arrays: list[np.ndarray], metrics: dict, who: str) -> list:
        """Zero-pad a client's rank-r_k delta to the global rank, after checking its shapes."""
        rank = metrics.get(RANK_METRIC)
        if rank is None:  # already padded (SecAgg+ sum)
            return arrays
        if not isinstance(rank, int) or not 1 <= rank <= self.max_rank:
            raise UpdateRejected(f"{who}: lora_rank {rank!r} is not in 1..{self.max_rank}")
        local = AdapterSpec(
            names=self.spec.names,
            shapes=tuple(
                truncated_shape(n, s, rank)
                for n, s in zip(self.spec.names, self.spec.shapes, strict=True)
            ),
        )
        check_arrays(local, arrays, who=f"{who} (rank {rank})")
        return pad(self.spec.names, arrays, self.spec.shapes)

"""Strategies by name, so the config selects one without if/elif chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.errors import ConfigError
from server.strategy.fedavg import DeltaFedAvg
from server.strategy.hetlora import HetLoRAFedAvg

STRATEGIES: dict[str, Callable[..., Any]] = {
    "fedavg": DeltaFedAvg,
    "hetlora": HetLoRAFedAvg,  # heterogeneous LoRA ranks, zero-padded (lora.ranks)
}


def build_strategy(name: str, **kwargs: Any) -> Any:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            [f"federation.strategy: unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}"]
        ) from None
    return factory(**kwargs)

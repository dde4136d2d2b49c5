"""What a client process loads once and reuses: model, tokenizer, data.

Loading MiniLM and the torch stack costs seconds; a Ray actor or a SuperNode process
serves many rounds and (in simulation) many virtual clients, so the PEFT model is built
once per process and per model config, and every round starts by overwriting all its
adapter weights with the global adapter the server sent. Nothing of one client's
training survives into another's round except through that overwrite.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from common.adapters import AdapterSpec, adapter_spec, build_adapter_model
from common.config import RunConfig
from common.data.pipeline import ClientData, client_data, run_labels
from common.lora import frozen_fingerprint
from common.models import load_tokenizer
from common.warnings_filter import silence_expected_warnings

silence_expected_warnings()


@dataclass
class Runtime:
    """One process's model and tokenizer for one model/adapter config."""

    model: Any
    tokenizer: Any
    spec: AdapterSpec
    num_labels: int | None
    frozen_fingerprint: str = ""
    preflight_done: bool = False


_LOCK = threading.Lock()
_RUNTIMES: dict[str, Runtime] = {}
_DATA: dict[tuple[str, int | None, str | None, tuple[int, float] | None], ClientData] = {}


def _model_key(config: RunConfig) -> str:
    parts = (
        config.model,
        config.lora,
        config.peft,
        config.data.labels,
        config.data.source,
        config.training.seed,
    )
    return repr(parts)


def get_runtime(config: RunConfig) -> Runtime:
    """The cached model for this config, built on first use."""
    key = _model_key(config)
    with _LOCK:
        if key not in _RUNTIMES:
            import torch

            torch.set_num_threads(config.training.threads)
            num_labels = (
                len(run_labels(config)) if config.model.task == "sequence-classification" else None
            )
            model = build_adapter_model(config, num_labels=num_labels)
            _RUNTIMES[key] = Runtime(
                model=model,
                tokenizer=load_tokenizer(config.model.path),
                spec=adapter_spec(model),
                num_labels=num_labels,
                frozen_fingerprint=frozen_fingerprint(model),
            )
        return _RUNTIMES[key]


def get_client_data(
    config: RunConfig,
    runtime: Runtime,
    *,
    partition_id: int | None,
    source: str | None = None,
    split: tuple[int, float] | None = None,
) -> ClientData:
    """This client's tokenised data, cached per process (``split``: the node's own
    held-out split, (seed, fraction); common/data/pipeline.py)."""
    key = (config.model_dump_json(), partition_id, source, split)
    with _LOCK:
        if key not in _DATA:
            _DATA[key] = client_data(
                config, runtime.tokenizer, partition_id=partition_id, source=source, split=split
            )
        return _DATA[key]

"""The adapter: the only weights that are trained, sent and aggregated.

The adapter is exactly the model's trainable parameters after PEFT wrapping (LoRA
matrices plus, for classification, the task head PEFT keeps in ``modules_to_save``).
Both sides build the same PEFT model from the same config, so the list of names and
shapes is identical and arrays travel as a plain ordered list, checked on arrival.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import RunConfig
from common.errors import UpdateRejected
from common.models import load_base_model
from common.peft_methods import get_method
from common.quantization import check_quantization


@dataclass(frozen=True)
class AdapterSpec:
    """Names, shapes and dtypes of the adapter arrays, in transfer order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes))

    @property
    def nbytes(self) -> int:
        """Bytes of one full adapter in float32."""
        return 4 * self.num_params


def build_adapter_model(config: RunConfig, *, num_labels: int | None = None) -> Any:
    """Base model + fresh adapter of ``peft.method``; initialisation is seeded by training.seed.

    The server's initial adapter is the one every client starts from, so the random
    initialisation of the adapter (LoRA A, prompts, prefixes) and of the task head is
    shared by construction.
    """
    import torch

    method = get_method(config.peft.method)
    check_quantization(config, quantizable=method.quantizable)
    # Seeded before loading: a classification head missing from the checkpoint is
    # initialised randomly by from_pretrained, and it is part of the adapter.
    torch.manual_seed(config.training.seed)
    base = load_base_model(
        config.model.path,
        config.model.task,
        num_labels=num_labels,
        dropout=config.model.dropout,
        quantization=config.model.quantization,
        pooling=config.model.pooling,
    )
    model = method.build(base, config)
    model.train()
    return model


def trainable_named_parameters(model: Any) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def adapter_spec(model: Any) -> AdapterSpec:
    params = trainable_named_parameters(model)
    return AdapterSpec(
        names=tuple(n for n, _ in params),
        shapes=tuple(tuple(p.shape) for _, p in params),
    )


def get_adapter_arrays(model: Any) -> list[np.ndarray]:
    """The adapter as float32 numpy arrays in transfer order (copies)."""
    return [
        p.detach().cpu().numpy().astype(np.float32, copy=True)
        for _, p in trainable_named_parameters(model)
    ]


def set_adapter_arrays(model: Any, arrays: Sequence[np.ndarray]) -> None:
    """Overwrite every adapter weight; shapes are checked first so nothing is half-set."""
    import torch

    params = trainable_named_parameters(model)
    check_arrays(adapter_spec(model), arrays, who="received adapter")
    with torch.no_grad():
        for (_, param), array in zip(params, arrays, strict=True):
            param.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))


def check_arrays(
    spec: AdapterSpec, arrays: Sequence[np.ndarray], *, who: str, max_norm: float | None = None
) -> None:
    """Reject arrays that are not this adapter: count, shape, dtype, NaN/Inf, norm."""
    if len(arrays) != len(spec.names):
        raise UpdateRejected(
            f"{who}: {len(arrays)} arrays, expected {len(spec.names)} (the adapter of this "
            "run); client and server must use the same model and lora settings"
        )
    for name, shape, array in zip(spec.names, spec.shapes, arrays, strict=True):
        array = np.asarray(array)
        if tuple(array.shape) != shape:
            raise UpdateRejected(f"{who}: {name} has shape {array.shape}, expected {shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise UpdateRejected(f"{who}: {name} has dtype {array.dtype}, expected float32")
        if not np.all(np.isfinite(array)):
            raise UpdateRejected(f"{who}: {name} contains NaN or Inf")
    if max_norm is not None:
        norm = global_norm(arrays)
        if norm > max_norm:
            raise UpdateRejected(f"{who}: update norm {norm:.4g} exceeds the bound {max_norm:.4g}")


def global_norm(arrays: Sequence[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def subtract(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The delta a client sends: trained adapter minus the adapter it received."""
    return [(n - o).astype(np.float32) for n, o in zip(new, old, strict=True)]


def add(base: Sequence[np.ndarray], delta: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [(b + d).astype(np.float32) for b, d in zip(base, delta, strict=True)]


def save_adapter(
    model: Any, arrays: Sequence[np.ndarray], folder: Path, *, method: str = "lora"
) -> None:
    """Write the adapter in its method's format: PEFT's own (loadable by stock
    PeftModel.from_pretrained) for every PEFT library method, safetensors for BitFit."""
    set_adapter_arrays(model, arrays)
    folder.mkdir(parents=True, exist_ok=True)
    get_method(method).save(model, folder)

"""Per-sample gradients Opacus cannot compute by itself: PEFT's IA3 vectors.

Opacus's ``hooks`` mode attaches to every module that *directly* owns a trainable
parameter and computes that module's per-sample gradients from its input and output
gradient. PEFT's IA3 layer keeps its vector in a ``ParameterDict`` (``ia3_l``) that is
only indexed, never called, so the hooks never fire and the vector gets no per-sample
gradient (Opacus 1.6 would try functorch on the ``ParameterDict``, which has no
forward). Here, for the length of a private round:

- the IA3 layer gets its vector as a direct parameter too (the same tensor object, under
  :data:`ALIAS`), so Opacus hooks the layer itself; and
- an exact grad sampler for PEFT's IA3 ``Linear`` is registered with Opacus:
  for output scaling ``y = base(x) * l``: ``∂L/∂l_j = Σ_t g[t, j] · base(x)[t, j]``;
  for feed-forward (input) scaling ``y = base(x * l)``:
  ``∂L/∂l_i = Σ_t x[t, i] · (∂L/∂(x*l))[t, i]``, the latter a vector-Jacobian product
  through the frozen base layer (works for ``nn.Linear`` and GPT-2's ``Conv1D``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

ALIAS = "dp_ia3_vector"  # no "ia3_" in it: PEFT's state dict keeps only keys with "ia3_"


def _ia3_layer_class() -> type | None:
    try:
        from peft.tuners.ia3.layer import Linear
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    return Linear


def _sum_over_tokens(values: torch.Tensor) -> torch.Tensor:
    """(batch, ..., features) -> (batch, features)."""
    return values.reshape(values.shape[0], -1, values.shape[-1]).sum(dim=1)


def ia3_grad_sampler(
    layer: Any, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradient of the single active IA3 vector of ``layer``."""
    vector = getattr(layer, ALIAS)
    x = activations[0].to(backprops.dtype)
    with torch.enable_grad():
        if layer.is_feedforward:
            scaled = (x * vector.detach().flatten()).requires_grad_(True)
            out = layer.base_layer(scaled)
            (grad_in,) = torch.autograd.grad(out, scaled, backprops)
            per_sample = _sum_over_tokens(x * grad_in)
        else:
            with torch.no_grad():
                base_out = layer.base_layer(x)
            per_sample = _sum_over_tokens(backprops * base_out)
    return {vector: per_sample.reshape(per_sample.shape[0], *vector.shape).detach()}


def register_grad_samplers() -> None:
    """Add the IA3 sampler to Opacus's table (idempotent)."""
    from opacus.grad_sample import GradSampleModule

    layer_class = _ia3_layer_class()
    if layer_class is not None:
        GradSampleModule.GRAD_SAMPLERS[layer_class] = ia3_grad_sampler


def _ia3_layers(model: Any) -> list[Any]:
    layer_class = _ia3_layer_class()
    if layer_class is None:
        return []
    return [m for m in model.modules() if type(m) is layer_class]


@contextmanager
def opacus_ready(model: Any) -> Iterator[None]:
    """Make every IA3 layer visible to Opacus's hooks for one private round, then undo it."""
    aliased = []
    for layer in _ia3_layers(model):
        active = [k for k in layer.active_adapters if k in layer.ia3_l]
        if not active or not layer.ia3_l[active[0]].requires_grad:
            continue
        if len(active) > 1:
            raise ValueError("DP training supports one active IA3 adapter per layer")
        layer.register_parameter(ALIAS, layer.ia3_l[active[0]])
        aliased.append(layer)
    if aliased:
        register_grad_samplers()
    try:
        yield
    finally:
        for layer in aliased:
            del layer._parameters[ALIAS]

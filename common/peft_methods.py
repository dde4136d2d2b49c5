"""Parameter-efficient methods, by name (``peft.method``): how each turns a base model
into an adapter model whose trainable parameters are exactly what clients train and send.

Every method here trains with DP-SGD under Opacus's ``hooks`` mode; where Opacus needs
help to compute per-sample gradients, the help is here or in ``client/per_sample.py``,
and ``tests/common/test_peft_methods.py`` checks each method's per-sample gradients
against per-example autograd:

- ``lora``: LoRA's A/B are ``nn.Linear`` layers, which Opacus supports natively.
- ``prompt-tuning``: PEFT computes the soft prompt once and repeats it over the batch,
  which leaves Opacus one "sample" for the whole batch (wrong per-sample gradients); the
  model here looks the prompt up once per example instead (same values, per-example graph).
- ``prefix-tuning``: the prefix encoder is an ``nn.Embedding`` looked up per example;
  supported natively. Needs a model whose forward accepts ``past_key_values``.
- ``ia3``: PEFT keeps IA3's vectors in a ``ParameterDict`` that has no forward of its own,
  so Opacus's hooks never see them; ``client/per_sample.py`` registers an exact grad sampler.
- ``bitfit``: only bias terms (and the task head) train; biases of ``nn.Linear`` and
  ``nn.LayerNorm`` are supported natively. Not a PEFT library method: saved as a plain
  safetensors file of the trained tensors.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import RunConfig
from common.errors import ConfigError
from common.lora import freeze_lora_a, lora_config
from common.models import TASKS

# Sequence-classification heads of Hugging Face models (PEFT's modules_to_save uses the same).
HEAD_MODULES = ("classifier", "score", "pre_classifier")
BITFIT_WEIGHTS = "bitfit_model.safetensors"
BITFIT_CONFIG = "bitfit_config.json"


@dataclass(frozen=True)
class PeftMethod:
    """One method: how to build it, and what it is for the docs and the run summary."""

    name: str
    build: Callable[[Any, RunConfig], Any]
    save: Callable[[Any, Path], None]
    quantizable: bool
    dp_note: str


# ------------------------------------------------------------------------ builders


def _peft_model(base: Any, peft_config: Any, key: str) -> Any:
    import peft

    try:
        return peft.get_peft_model(base, peft_config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            [f"{key}: PEFT cannot apply {peft_config.peft_type.value} to this model ({exc})"]
        ) from exc


def _task_type(config: RunConfig) -> str:
    return TASKS[config.model.task].peft_task_type


def _build_lora(base: Any, config: RunConfig) -> Any:
    model = _peft_model(base, lora_config(config), "lora.target-modules")
    if config.lora.variant == "ffa":
        freeze_lora_a(model)
    return model


def _check_positions(base: Any, config: RunConfig) -> None:
    """Absolute position embeddings must cover prompt + input (BERT: 512)."""
    limit = getattr(base.config, "max_position_embeddings", None)
    needed = config.peft.num_virtual_tokens + config.model.max_length
    if limit is not None and needed > int(limit):
        raise ConfigError(
            [
                f"peft.num-virtual-tokens ({config.peft.num_virtual_tokens}) + model.max-length "
                f"({config.model.max_length}) = {needed} exceeds the model's "
                f"max_position_embeddings ({limit}): prompt tuning prepends the virtual "
                "tokens to the input; lower one of them"
            ]
        )


_PROMPT_SHAPE_NAMES = {
    "token_dim": ("hidden_size", "dim", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_heads", "n_head"),
    "num_layers": ("num_hidden_layers", "n_layers", "n_layer"),
}


def _prompt_shape(model_config: Any) -> dict[str, int]:
    """Prompt/prefix dimensions from the model config, under whichever names the family uses.

    PEFT reads only the common names (hidden_size ...); DistilBERT says dim, n_layers.
    """
    shape = {}
    for key, names in _PROMPT_SHAPE_NAMES.items():
        value = next((getattr(model_config, n) for n in names if hasattr(model_config, n)), None)
        if isinstance(value, int):
            shape[key] = value
    return shape


def _per_example_prompt(self: Any, batch_size: int, task_ids: Any = None, **_: Any) -> Any:
    """PeftModel.get_prompt for prompt tuning, with one embedding lookup per example.

    PEFT looks the prompt up once and repeats it, so every example's prompt gradient flows
    through one shared lookup and Opacus cannot tell examples apart. Looking it up for each
    row gives the same prompts with a per-example graph.
    """
    encoder = self.prompt_encoder[self.active_adapter]
    tokens = self.prompt_tokens[self.active_adapter].unsqueeze(0).expand(batch_size, -1)
    return encoder(tokens.to(encoder.embedding.weight.device))


def _build_prompt_tuning(base: Any, config: RunConfig) -> Any:
    import peft

    _check_positions(base, config)
    peft_config = peft.PromptTuningConfig(
        task_type=_task_type(config),
        num_virtual_tokens=config.peft.num_virtual_tokens,
        **_prompt_shape(base.config),
    )
    model = _peft_model(base, peft_config, "peft.method")
    model.get_prompt = types.MethodType(_per_example_prompt, model)
    return model


def _prefix_reaches_output(model: Any) -> bool:
    """Whether the model's output depends on the learned prefix (one tiny probe forward).

    Models accept ``past_key_values`` through ``**kwargs`` whether or not their attention
    uses them, so the signature proves nothing; a gradient does.
    """
    import torch

    prefix = model.prompt_encoder[model.active_adapter].embedding.weight
    input_ids = torch.ones((1, 2), dtype=torch.long)
    with torch.enable_grad():
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        (grad,) = torch.autograd.grad(logits.sum(), prefix, allow_unused=True)
    return grad is not None and bool(grad.abs().sum() > 0)


def _build_prefix_tuning(base: Any, config: RunConfig) -> Any:
    import peft

    peft_config = peft.PrefixTuningConfig(
        task_type=_task_type(config),
        num_virtual_tokens=config.peft.num_virtual_tokens,
        **_prompt_shape(base.config),
    )
    model = _peft_model(base, peft_config, "peft.method")
    try:
        reaches = _prefix_reaches_output(model)
        reason = "its attention layers ignore them"
    except (TypeError, ValueError, AttributeError, RuntimeError) as exc:
        reaches, reason = False, f"its forward fails with them ({type(exc).__name__}: {exc})"
    if not reaches:
        raise ConfigError(
            [
                f'peft.method = "prefix-tuning" cannot work with {type(base).__name__}: prefix '
                "tuning feeds learned keys/values to every attention layer as "
                f'past_key_values, and {reason}; use "prompt-tuning", "lora" or "ia3"'
            ]
        )
    return model


def _build_ia3(base: Any, config: RunConfig) -> Any:
    import peft

    section = config.peft
    peft_config = peft.IA3Config(
        task_type=_task_type(config),
        target_modules=section.target_modules,
        feedforward_modules=section.feedforward_modules,
    )
    return _peft_model(base, peft_config, "peft.target-modules")


def _build_bitfit(base: Any, config: RunConfig) -> Any:
    """Freeze everything but the bias terms (and, for classification, the new head)."""
    import torch

    for param in base.parameters():
        param.requires_grad_(False)
    biases = 0
    for name, module in base.named_modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.nn.Parameter) and name.split(".")[0] not in HEAD_MODULES:
            bias.requires_grad_(True)
            biases += 1
    if biases == 0:
        raise ConfigError(
            [
                f'peft.method = "bitfit" trains only bias terms, and {type(base).__name__} '
                f"({base.config.model_type}) has none (Llama-style models use bias-free "
                'layers); use "lora", "ia3", "prompt-tuning" or "prefix-tuning"'
            ]
        )
    if config.model.task == "sequence-classification":
        heads = [m for n, m in base.named_children() if n in HEAD_MODULES]
        if not heads:
            raise ConfigError(
                [
                    f'peft.method = "bitfit": no classification head named {HEAD_MODULES} in '
                    f"{type(base).__name__}; use lora"
                ]
            )
        for head in heads:
            head.requires_grad_(True)
    return base


# ------------------------------------------------------------------------- savers


def _save_peft(model: Any, folder: Path) -> None:
    model.save_pretrained(str(folder))


def _save_bitfit(model: Any, folder: Path) -> None:
    """The trained tensors by name (loadable into the base with load_state_dict(strict=False))."""
    from safetensors.torch import save_file

    tensors = {
        name: param.detach().cpu().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    save_file(tensors, str(folder / BITFIT_WEIGHTS))
    (folder / BITFIT_CONFIG).write_text(
        json.dumps({"method": "bitfit", "tensors": sorted(tensors)}, indent=1) + "\n"
    )


def load_bitfit(model: Any, folder: Path) -> Any:
    """Load a saved BitFit adapter into a base model of the same architecture."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / BITFIT_WEIGHTS))
    missing = [n for n in tensors if n not in dict(model.named_parameters())]
    if missing:
        raise ConfigError([f"{folder}: BitFit tensors {missing[:3]} are not in this model"])
    model.load_state_dict(tensors, strict=False)
    return model


# ----------------------------------------------------------------------- registry

METHODS: dict[str, PeftMethod] = {
    "lora": PeftMethod(
        "lora", _build_lora, _save_peft, True, "yes (LoRA A/B are nn.Linear: native hooks)"
    ),
    "prompt-tuning": PeftMethod(
        "prompt-tuning",
        _build_prompt_tuning,
        _save_peft,
        True,
        "yes (prompt looked up per example so Opacus's embedding hook sees each one)",
    ),
    "prefix-tuning": PeftMethod(
        "prefix-tuning",
        _build_prefix_tuning,
        _save_peft,
        True,
        "yes (prefix encoder is an nn.Embedding looked up per example: native hooks)",
    ),
    "ia3": PeftMethod(
        "ia3",
        _build_ia3,
        _save_peft,
        False,
        "yes (exact grad sampler in client/per_sample.py; Opacus alone misses the vectors)",
    ),
    "bitfit": PeftMethod(
        "bitfit",
        _build_bitfit,
        _save_bitfit,
        False,
        "yes (biases of nn.Linear / nn.LayerNorm: native hooks)",
    ),
}


def get_method(name: str) -> PeftMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            [f"peft.method: unknown method {name!r}; choose one of {sorted(METHODS)}"]
        ) from None

"""QLoRA-style k-bit loading of the frozen base model (``model.quantization``).

Measured here (bitsandbytes 0.50, torch 2.13 CPU): bitsandbytes' CPU backend loads a
model in 8-bit (``Linear8bitLt``) or 4-bit NF4 (``Linear4bit``), and Opacus's hooks
compute per-sample gradients of LoRA matrices on top of them, because the adapter
layers stay float32 ``nn.Linear`` and the quantized base is frozen. Limits:

- 4-bit needs every quantized layer's input width to be a multiple of bitsandbytes'
  block size (64); tiny test models of width 32 fail inside bitsandbytes.
- Only methods whose trainable weights live outside the quantized layers are allowed
  (lora, prompt-tuning, prefix-tuning). IA3 and BitFit train inside them (IA3's
  quantized layer classes and the quantized layers' biases have no per-sample gradient
  support in Opacus), so they are refused with a clear error.
- The classification head is never quantized: it is trained and sent.
"""

from __future__ import annotations

from typing import Any

from common.config import RunConfig
from common.errors import ConfigError

SKIPPED_MODULES = ["classifier", "score", "pre_classifier", "lm_head"]


def check_quantization(config: RunConfig, *, quantizable: bool) -> None:
    """Refuse combinations that cannot work, before any model is loaded."""
    mode = config.model.quantization
    if mode == "none":
        return
    if not quantizable:
        raise ConfigError(
            [
                f'model.quantization = "{mode}" cannot be used with peft.method = '
                f'"{config.peft.method}": its trainable weights live inside the quantized '
                "layers, where Opacus computes no per-sample gradients; use lora, "
                'prompt-tuning or prefix-tuning, or model.quantization = "none"'
            ]
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            [
                f'model.quantization = "{mode}" needs the bitsandbytes package (0.50 or '
                "later has a CPU backend): pip install bitsandbytes, or set "
                'model.quantization = "none"'
            ]
        ) from exc


def quantization_config(mode: str) -> Any:
    """transformers' BitsAndBytesConfig for ``mode``, or None for full precision."""
    if mode == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIPPED_MODULES)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.float32,
        llm_int8_skip_modules=SKIPPED_MODULES,
    )

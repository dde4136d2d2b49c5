"""Silence library warnings that are expected here and documented, so real ones stand out.

- Opacus "Secure RNG turned off": secure_mode needs torchcsprng, which no registry we
  reach ships; the README states that noise comes from torch's default generator.
- Opacus "Optimal order is the largest alpha": the RDP bound is then conservative
  (ε over- rather than under-estimated); calibration and ledger use the same orders.
- torch "Full backward hook is firing ... no inputs require gradients": frozen
  embeddings under LoRA; Opacus's hooks still see every adapter layer (the DP preflight
  checks it).
- transformers "is_gradient_checkpointing is deprecated": raised inside PEFT.
- bitsandbytes (logs, imported by PEFT when installed): "Failed to load CPU
  gemm_4bit_forward from kernels-community" (an optional hub-downloaded kernel, which
  privatune never fetches: the built-in CPU path runs) and "MatMul8bitLt: inputs will be
  cast ... to float16" on every 8-bit forward (how bitsandbytes' int8 matmul works).
"""

from __future__ import annotations

import logging
import warnings

_EXPECTED = (
    r"Secure RNG turned off",
    r"Optimal order is the largest alpha",
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
    r"`is_gradient_checkpointing` is deprecated",
)


_QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops", "bitsandbytes.autograd._functions")


def silence_expected_warnings() -> None:
    for pattern in _EXPECTED:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)

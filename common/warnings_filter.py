"""Silence library warnings that are expected here and documented, so real ones stand out.

- Opacus "Secure RNG turned off": secure_mode needs torchcsprng, which no registry we
  reach ships; the README states that noise comes from torch's default generator.
- Opacus "Optimal order is the largest alpha": the RDP bound is then conservative
  (ε over- rather than under-estimated); calibration and ledger use the same orders.
- torch "Full backward hook is firing ... no inputs require gradients": frozen
  embeddings under LoRA; Opacus's hooks still see every adapter layer (the DP preflight
  checks it).
- transformers "is_gradient_checkpointing is deprecated": raised inside PEFT.
"""

from __future__ import annotations

import warnings

_EXPECTED = (
    r"Secure RNG turned off",
    r"Optimal order is the largest alpha",
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
    r"`is_gradient_checkpointing` is deprecated",
)


def silence_expected_warnings() -> None:
    for pattern in _EXPECTED:
        warnings.filterwarnings("ignore", message=pattern)

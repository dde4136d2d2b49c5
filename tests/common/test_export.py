"""Export: the merged model gives the logits of base + adapter, with plain transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.adapters import build_adapter_model, get_adapter_arrays, save_adapter
from common.config import load_config
from common.errors import PrivatuneError
from common.export import export


def _finished_run(
    tmp_path: Path, tiny_bert: Path, method: str = "lora", *extra: str
) -> tuple[Path, object]:
    config = load_config(None, [f"model.path='{tiny_bert}'", f"peft.method='{method}'", *extra])
    model = build_adapter_model(config, num_labels=5)
    rng = np.random.default_rng(0)
    arrays = [
        a + rng.normal(scale=0.05, size=a.shape).astype(np.float32)
        for a in get_adapter_arrays(model)
    ]
    run = tmp_path / "run"
    save_adapter(model, arrays, run / "adapter", method=method)
    (run / "config.resolved.toml").write_text(config.to_toml())
    return run, model


@pytest.mark.parametrize("method", ["lora", "ia3", "bitfit"])
def test_merged_export_matches_base_plus_adapter(
    method: str, tiny_bert: Path, tmp_path: Path
) -> None:
    """A stock AutoModel loaded from the export reproduces the adapter model's logits."""
    from transformers import AutoModelForSequenceClassification

    run, model = _finished_run(tmp_path, tiny_bert, method)
    out = export(run, tmp_path / "merged", merge=True)
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    model.eval()  # type: ignore[attr-defined]
    ids = torch.randint(5, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits  # type: ignore[operator]
        got = merged(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert merged.config.id2label[0] == "billing"
    assert (out / "tokenizer.json").is_file()


def test_adapter_export_and_errors(tiny_bert: Path, tmp_path: Path) -> None:
    """Without --merge the PEFT folder is copied; bad folders and overwrites are refused."""
    run, _ = _finished_run(tmp_path, tiny_bert)
    out = export(run, tmp_path / "adapter-out")
    assert (out / "adapter_model.safetensors").is_file()
    with pytest.raises(PrivatuneError, match="not empty"):
        export(run, out)
    with pytest.raises(PrivatuneError, match="no finished run"):
        export(tmp_path / "nowhere", tmp_path / "x")


def test_prompt_methods_cannot_be_merged(tiny_bert: Path, tmp_path: Path) -> None:
    run, _ = _finished_run(tmp_path, tiny_bert, "prompt-tuning")
    with pytest.raises(PrivatuneError, match="nothing to merge"):
        export(run, tmp_path / "merged", merge=True)
    assert (export(run, tmp_path / "adapter") / "adapter_config.json").is_file()


def test_mean_pooled_runs_cannot_be_merged(tiny_bert: Path, tmp_path: Path) -> None:
    """Plain transformers heads read [CLS]: a merged mean-pooled model would mispredict."""
    run, _ = _finished_run(tmp_path, tiny_bert, "lora", "model.pooling='mean'")
    with pytest.raises(PrivatuneError, match="--merge: .*mean of the token states"):
        export(run, tmp_path / "merged", merge=True)
    assert (export(run, tmp_path / "adapter-out") / "adapter_model.safetensors").is_file()

"""Mean pooling: the classifier reads the masked mean of the token states, nothing else.

Oracle: the encoder's own token states (``output_hidden_states``), averaged by hand over
the positions the attention mask keeps, fed to the model's own classifier.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from common.adapters import adapter_spec, build_adapter_model
from common.config import load_config
from common.errors import ModelError, PrivatuneError
from common.models import load_base_model
from common.pooling import POOLING_CONFIG, folder_pooling

CLS = "sequence-classification"


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    mask[1, 2:] = 0
    return ids * mask, mask


def _sentence_folder(tiny_bert: Path, tmp_path: Path, declared: dict[str, bool]) -> Path:
    """The tiny BERT with a sentence-transformers pooling config beside it."""
    folder = tmp_path / "st-bert"
    shutil.copytree(tiny_bert, folder)
    (folder / POOLING_CONFIG).parent.mkdir()
    (folder / POOLING_CONFIG).write_text(json.dumps({"word_embedding_dimension": 32, **declared}))
    return folder


def test_mean_pooling_logits_equal_the_hand_computed_masked_mean(tiny_bert: Path) -> None:
    model = load_base_model(str(tiny_bert), CLS, num_labels=3, dropout=0.0, pooling="mean").eval()
    ids, mask = _batch()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        states = out.hidden_states[-1]
        kept = mask.unsqueeze(-1).float()
        mean = (states * kept).sum(1) / kept.sum(1)
        want = model.classifier(mean)
        # Padding changes nothing: the first row alone, unpadded, gives the same logits.
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
    torch.testing.assert_close(out.logits, want)
    torch.testing.assert_close(alone, want[:1], rtol=1e-5, atol=1e-5)
    assert type(model.bert.pooler).__name__ == "MeanPooling"


def test_cls_pooling_is_the_models_own_head(tiny_bert: Path) -> None:
    """'cls' (and 'auto' without a sentence-transformers config) leave the model as loaded."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    stock = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).eval()
    ids, mask = _batch()
    for pooling in ("cls", "auto"):
        torch.manual_seed(0)
        model = load_base_model(str(tiny_bert), CLS, num_labels=3, pooling=pooling).eval()
        assert type(model.bert.pooler).__name__ == "BertPooler"
        with torch.no_grad():
            torch.testing.assert_close(
                model(input_ids=ids, attention_mask=mask).logits,
                stock(input_ids=ids, attention_mask=mask).logits,
            )


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ({"pooling_mode_mean_tokens": True}, "MeanPooling"),
        ({"pooling_mode_cls_token": True}, "BertPooler"),
        ({"pooling_mode_max_tokens": True}, "BertPooler"),
    ],
)
def test_auto_follows_the_sentence_transformers_config(
    tiny_bert: Path, tmp_path: Path, declared: dict[str, bool], expected: str
) -> None:
    folder = _sentence_folder(tiny_bert, tmp_path, declared)
    model = load_base_model(str(folder), CLS, num_labels=3, pooling="auto")
    assert type(model.bert.pooler).__name__ == expected


def test_packaged_default_model_declares_mean_pooling() -> None:
    from common.models import default_model_dir

    assert folder_pooling(default_model_dir()) == "mean"


def test_mean_pooling_adds_no_adapter_weights(tiny_bert: Path) -> None:
    """The adapter (what is trained, sent and aggregated) is the same under either pooling."""
    specs = [
        adapter_spec(
            build_adapter_model(
                load_config(None, [f"model.path='{tiny_bert}'", f"model.pooling='{p}'"]),
                num_labels=3,
            )
        )
        for p in ("cls", "mean")
    ]
    assert specs[0] == specs[1]


def test_bad_pooling_inputs_are_refused_with_the_key(tiny_bert: Path, tmp_path: Path) -> None:
    broken = _sentence_folder(tiny_bert, tmp_path, {})
    (broken / POOLING_CONFIG).write_text("{not json")
    with pytest.raises(ModelError, match=r"model.pooling: cannot read .*1_Pooling"):
        load_base_model(str(broken), CLS, num_labels=3, pooling="auto")
    # An explicit choice does not read the folder's config at all.
    load_base_model(str(broken), CLS, num_labels=3, pooling="cls")
    with pytest.raises(PrivatuneError, match="model.pooling"):
        load_config(None, ["model.pooling='max'"])


def test_mean_pooling_is_refused_where_the_head_reads_no_pooler(tmp_path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    from tests.support.tiny_models import _tokenizer

    folder = tmp_path / "distil"
    tokenizer = _tokenizer("bert")
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=16, n_layers=1, n_heads=2, hidden_dim=32
    )
    DistilBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(ModelError, match="model.pooling = 'mean' needs .*'cls'"):
        load_base_model(str(folder), CLS, num_labels=3, pooling="mean")
    model = load_base_model(str(folder), CLS, num_labels=3, pooling="auto")
    assert not any(type(m).__name__ == "MeanPooling" for m in model.modules())

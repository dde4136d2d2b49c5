"""Every PEFT method: per-sample gradients under Opacus equal per-example autograd, the
adapter is exactly the method's weights, it saves and reloads, and combinations that
cannot work are refused with an error naming the keys and the reason."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from client.dp import DPSettings, check_grad_samples, private_training
from client.per_sample import ALIAS
from common.adapters import adapter_spec, build_adapter_model, get_adapter_arrays, save_adapter
from common.config import PeftSection, RunConfig, load_config
from common.errors import ConfigError
from common.losses import per_example_losses
from common.peft_methods import METHODS, load_bitfit

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
]

NUM_LABELS = 3
ROWS, WIDTH, FIRST_WORD_ID = 5, 7, 7
CLS, CAUSAL = "sequence-classification", "causal-lm"
# (method, model fixture, task): every method on an encoder classifier and two causal LMs
# (Llama: bias-free Linear layers; GPT-2: Conv1D layers with biases).
CASES = [
    (method, fixture, task)
    for method in METHODS
    for fixture, task in (("tiny_bert", CLS), ("tiny_llama", CAUSAL), ("tiny_gpt2", CAUSAL))
    if not (method == "bitfit" and fixture == "tiny_llama")  # refused: no biases
]


def _config(path: Path, task: str, method: str, *extra: str) -> RunConfig:
    return load_config(
        None,
        [
            f"model.path='{path}'",
            f"model.task='{task}'",
            "model.dropout=0.0",
            f"peft.method='{method}'",
            "peft.num-virtual-tokens=3",
            "privacy.noise-multiplier=1.0",
            *extra,
        ],
    )


def _model(config: RunConfig) -> Any:
    """The adapter model with every adapter weight moved off its (often neutral) init."""
    labels = NUM_LABELS if config.model.task == CLS else None
    model = build_adapter_model(config, num_labels=labels)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model


def _batch(model: Any, task: str) -> TensorDataset:
    """Right-padded random rows; causal rows are their own labels (pad positions ignored)."""
    generator = torch.Generator().manual_seed(3)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(FIRST_WORD_ID, vocab, (ROWS, WIDTH), generator=generator)
    lengths = torch.tensor([WIDTH, 4, WIDTH, 5, 6])
    attention = (torch.arange(WIDTH)[None, :] < lengths[:, None]).long()
    ids = ids * attention
    if task == CLS:
        labels = torch.randint(0, NUM_LABELS, (ROWS,), generator=generator)
    else:
        labels = torch.where(attention.bool(), ids, torch.full_like(ids, -100))
    return TensorDataset(ids, attention, labels)


@pytest.mark.parametrize(("method", "fixture", "task"), CASES)
def test_per_sample_gradients_match_per_example_autograd(
    method: str, fixture: str, task: str, request: pytest.FixtureRequest
) -> None:
    """Opacus (hooks, plus client/per_sample.py) gives each example's own gradient."""
    config = _config(request.getfixturevalue(fixture), task, method)
    model = _model(config)
    data = _batch(model, task)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    reference = []
    for i in range(ROWS):
        row = [t[i : i + 1] for t in data.tensors]
        loss = per_example_losses(model, row, task).sum()
        reference.append(torch.autograd.grad(loss, params, allow_unused=True))
    # The comparison means something only if every adapter weight gets a gradient.
    for k, name in enumerate(names):
        assert any(r[k] is not None and r[k].abs().sum() > 0 for r in reference), name

    optimizer = torch.optim.SGD(params, lr=0.1)
    settings = DPSettings(noise_multiplier=0.0, max_grad_norm=1e6)
    with private_training(model, optimizer, data, batch_size=ROWS, settings=settings) as private:
        private.optimizer.zero_grad(set_to_none=True)
        per_example_losses(model, list(data.tensors), task).mean().backward()
        check_grad_samples(model)
        for k, (name, p) in enumerate(zip(names, params, strict=True)):
            expected = torch.stack(
                [r[k] if r[k] is not None else torch.zeros_like(p) for r in reference]
            )
            scale = max(float(expected.abs().max()), 1e-3)
            torch.testing.assert_close(
                p.grad_sample, expected, rtol=0.0, atol=2e-5 * scale, msg=name
            )
    # The IA3 alias exists only inside the private round.
    assert not any(ALIAS in n for n, _ in model.named_parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == names


ADAPTER_NAMES = {
    "lora": (".lora_A.", ".lora_B."),
    "prompt-tuning": ("prompt_encoder.",),
    "prefix-tuning": ("prompt_encoder.",),
    "ia3": (".ia3_l.",),
    "bitfit": ("bias",),
}


@pytest.mark.parametrize(("method", "fixture", "task"), CASES)
def test_adapter_is_the_method_weights_and_saves_and_reloads(
    method: str, fixture: str, task: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Trainable = the method's weights (+ the classification head); a reload is identical."""
    path = request.getfixturevalue(fixture)
    config = _config(path, task, method)
    model = _model(config)
    spec = adapter_spec(model)
    head = ("classifier", "score")
    for name in spec.names:
        is_head = task == CLS and any(h in name for h in head)
        assert is_head or any(tag in name for tag in ADAPTER_NAMES[method]), name
    total = sum(p.numel() for p in model.parameters())
    assert 0 < spec.num_params < 0.2 * total
    if method == "bitfit":  # every bias of the base trains
        biases = [n for n, p in model.named_parameters() if n.endswith("bias")]
        assert set(biases) <= set(spec.names)

    model.eval()
    data = _batch(model, task)
    with torch.no_grad():
        expected = model(input_ids=data.tensors[0], attention_mask=data.tensors[1]).logits
    save_adapter(model, get_adapter_arrays(model), tmp_path, method=method)

    import transformers

    auto = transformers.AutoModelForSequenceClassification
    kwargs: dict[str, Any] = {"num_labels": NUM_LABELS}
    if task == CAUSAL:
        auto, kwargs = transformers.AutoModelForCausalLM, {}
    base = auto.from_pretrained(path, **kwargs)
    if method == "bitfit":
        reloaded = load_bitfit(base, tmp_path)
    else:
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(base, tmp_path)
    reloaded.eval()
    with torch.no_grad():
        got = reloaded(input_ids=data.tensors[0], attention_mask=data.tensors[1]).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_config_methods_are_the_registry() -> None:
    """peft.method accepts exactly the registered methods."""
    field = PeftSection.model_fields["method"].annotation
    assert set(typing.get_args(field)) == set(METHODS)


def test_bitfit_on_a_model_without_biases_is_refused(tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match=r'peft.method = "bitfit".*LlamaForCausalLM.*has none'):
        build_adapter_model(_config(tiny_llama, CAUSAL, "bitfit"))


def test_prefix_tuning_needs_past_key_values(tmp_path: Path) -> None:
    """DistilBERT's forward takes no past_key_values: prefix tuning cannot feed it."""
    from transformers import DistilBertConfig, DistilBertModel

    from tests.support.tiny_models import _tokenizer

    tokenizer = _tokenizer("bert")
    torch.manual_seed(0)
    DistilBertModel(
        DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    ).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = _config(tmp_path, CLS, "prefix-tuning")
    with pytest.raises(ConfigError, match=r"prefix-tuning.*DistilBert.*past_key_values"):
        build_adapter_model(config, num_labels=NUM_LABELS)
    # prompt tuning works there: it only prepends embeddings
    model = build_adapter_model(_config(tmp_path, CLS, "prompt-tuning"), num_labels=NUM_LABELS)
    assert any("prompt_encoder" in n for n in adapter_spec(model).names)


def test_prompt_longer_than_the_position_table_is_refused(tiny_bert: Path) -> None:
    """Tiny BERT has 128 positions: 100 virtual tokens + 64 input tokens do not fit."""
    config = _config(tiny_bert, CLS, "prompt-tuning", "peft.num-virtual-tokens=100")
    with pytest.raises(ConfigError, match=r"peft.num-virtual-tokens \(100\).*exceeds"):
        build_adapter_model(config, num_labels=NUM_LABELS)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["peft.method='ia3'", "lora.variant='ffa'"], r'lora.variant = "ffa" applies to'),
        (
            ["federation.strategy='hetlora'", "lora.ranks=[2, 4]", "peft.method='ia3'"],
            r'"hetlora".*needs peft.method = "lora"',
        ),
        (["federation.strategy='hetlora'"], r"hetlora.*needs lora.ranks"),
        (["lora.ranks=[2, 4]"], r'lora.ranks.*needs federation.strategy = "hetlora"'),
        (
            ["federation.strategy='hetlora'", "lora.ranks=[2, 16]", "lora.r=8"],
            r"lora.ranks: 16 exceeds lora.r = 8",
        ),
        (
            ["federation.strategy='hetlora'", "lora.ranks=[2, 4]", "lora.variant='ffa'"],
            r"hetlora.*cannot use lora.variant",
        ),
        (["peft.method='dora'"], r"peft.method"),
    ],
)
def test_clashing_adapter_settings_are_config_errors(extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, extra)


@pytest.mark.parametrize("method", ["ia3", "bitfit"])
def test_quantization_refused_for_methods_training_inside_quantized_layers(
    method: str, tiny_gpt2: Path
) -> None:
    config = _config(tiny_gpt2, CAUSAL, method, "model.quantization='8bit'")
    with pytest.raises(ConfigError, match=rf'"8bit" cannot be used with peft.method = "{method}"'):
        build_adapter_model(config)


@pytest.fixture(scope="module")
def tiny_llama_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Width 64: bitsandbytes' 4-bit CPU kernels need widths that are multiples of 64."""
    from tests.support.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-64"), hidden=64)


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_qlora_on_a_quantized_base_has_exact_per_sample_gradients(
    bits: str, tiny_llama_64: Path
) -> None:
    """QLoRA-style: frozen k-bit base (bitsandbytes CPU), float32 LoRA, DP-SGD hooks exact."""
    import bitsandbytes as bnb

    config = _config(tiny_llama_64, CAUSAL, "lora", f"model.quantization='{bits}'")
    model = _model(config)
    layer = {"8bit": bnb.nn.Linear8bitLt, "4bit": bnb.nn.Linear4bit}[bits]
    assert any(isinstance(m, layer) for m in model.modules())
    data = _batch(model, CAUSAL)
    params = [p for p in model.parameters() if p.requires_grad]
    reference = [
        torch.autograd.grad(
            per_example_losses(model, [t[i : i + 1] for t in data.tensors], CAUSAL).sum(), params
        )
        for i in range(ROWS)
    ]
    optimizer = torch.optim.SGD(params, lr=0.1)
    settings = DPSettings(noise_multiplier=0.0, max_grad_norm=1e6)
    with private_training(model, optimizer, data, batch_size=ROWS, settings=settings) as private:
        private.optimizer.zero_grad(set_to_none=True)
        per_example_losses(model, list(data.tensors), CAUSAL).mean().backward()
        for k, p in enumerate(params):
            expected = torch.stack([r[k] for r in reference])
            scale = max(float(expected.abs().max()), 1e-3)
            # 8-bit matmuls run in float16 inside bitsandbytes: batch and single-row
            # forwards round differently, hence the looser tolerance there.
            tol = 2e-3 if bits == "8bit" else 2e-5
            torch.testing.assert_close(p.grad_sample, expected, rtol=0.0, atol=tol * scale)

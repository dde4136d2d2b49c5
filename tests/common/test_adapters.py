"""The adapter: its arrays round-trip, are validated before use, and load in stock PEFT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.adapters import (
    AdapterSpec,
    adapter_spec,
    add,
    build_adapter_model,
    check_arrays,
    get_adapter_arrays,
    save_adapter,
    set_adapter_arrays,
    subtract,
)
from common.config import RunConfig, load_config
from common.errors import UpdateRejected

NUM_LABELS = 3
HIDDEN, LAYERS, RANK = 32, 2, 8  # the tiny models' width and depth, lora.r default


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bert_config(path: Path, *extra: str) -> RunConfig:
    return load_config(None, [f"model.path='{path}'", *extra])


def _llama_config(path: Path, *extra: str) -> RunConfig:
    return load_config(None, [f"model.path='{path}'", "model.task='causal-lm'", *extra])


def _perturbed(arrays: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Arrays moved well away from the initial adapter (LoRA B leaves zero)."""
    rng = np.random.default_rng(seed)
    return [(a + 0.3 * rng.standard_normal(a.shape)).astype(np.float32) for a in arrays]


def _batch(vocab: int, rows: int = 4, width: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    input_ids = torch.randint(7, vocab, (rows, width), generator=generator)
    attention = torch.ones_like(input_ids)
    attention[0, 5:] = 0  # one right-padded row
    input_ids[0, 5:] = 0
    return input_ids, attention


@torch.no_grad()
def _logits(model: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(input_ids=batch[0], attention_mask=batch[1]).logits


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def test_arrays_round_trip_into_a_fresh_model(tiny_bert: Path) -> None:
    """Perturbed arrays set into a differently seeded fresh model reproduce the logits."""
    source = build_adapter_model(_bert_config(tiny_bert), num_labels=NUM_LABELS)
    arrays = _perturbed(get_adapter_arrays(source))
    assert all(a.dtype == np.float32 for a in arrays)
    # Oracle: write the weights into the source model directly, without set_adapter_arrays.
    with torch.no_grad():
        for p, a in zip(_trainable(source), arrays, strict=True):
            p.copy_(torch.from_numpy(a))

    target = build_adapter_model(_bert_config(tiny_bert, "training.seed=1"), num_labels=NUM_LABELS)
    batch = _batch(int(target.config.vocab_size))
    untouched = _logits(target, batch)
    set_adapter_arrays(target, arrays)

    got = get_adapter_arrays(target)
    for a, b in zip(got, arrays, strict=True):
        assert np.array_equal(a, b)
    got[0][...] = 123.0  # the returned arrays are copies
    assert not np.any(get_adapter_arrays(target)[0] == 123.0)

    expected = _logits(source, batch)
    assert not torch.allclose(untouched, expected, atol=1e-3), "the adapter must matter"
    torch.testing.assert_close(_logits(target, batch), expected, rtol=0.0, atol=1e-6)


def test_wrong_shape_is_rejected_before_any_weight_changes(tiny_bert: Path) -> None:
    """A bad last array raises UpdateRejected naming it, and no earlier weight was written."""
    model = build_adapter_model(_bert_config(tiny_bert), num_labels=NUM_LABELS)
    spec = adapter_spec(model)
    before = [p.detach().clone() for p in _trainable(model)]
    arrays = _perturbed(get_adapter_arrays(model))
    arrays[-1] = np.zeros((spec.shapes[-1][0] + 1,), dtype=np.float32)
    with pytest.raises(UpdateRejected, match=spec.names[-1].replace(".", r"\.")):
        set_adapter_arrays(model, arrays)
    for p, b in zip(_trainable(model), before, strict=True):
        assert torch.equal(p, b)
    with pytest.raises(UpdateRejected, match="expected"):
        set_adapter_arrays(model, arrays[:-1])
    for p, b in zip(_trainable(model), before, strict=True):
        assert torch.equal(p, b)


SPEC = AdapterSpec(names=("lora_A.weight", "head.bias"), shapes=((2, 3), (4,)))


def _good() -> list[np.ndarray]:
    return [np.ones((2, 3), dtype=np.float32), np.zeros(4, dtype=np.float32)]


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, np.nan, r"lora_A\.weight contains NaN or Inf"),
        (1, np.inf, r"head\.bias contains NaN or Inf"),
        (1, -np.inf, r"head\.bias contains NaN or Inf"),
    ],
)
def test_check_arrays_rejects_non_finite_values_by_name(
    index: int, value: float, message: str
) -> None:
    """A NaN or ±Inf anywhere is rejected with the name of the array that holds it."""
    arrays = _good()
    arrays[index].flat[-1] = value
    with pytest.raises(UpdateRejected, match=message):
        check_arrays(SPEC, arrays, who="client 3")


def test_check_arrays_rejects_dtype_count_shape_and_norm() -> None:
    """Integer dtype, wrong count, wrong shape and a too-large norm each fail, with context."""
    check_arrays(SPEC, _good(), who="client 3")
    check_arrays(SPEC, [a.astype(np.float64) for a in _good()], who="client 3")

    arrays = _good()
    arrays[1] = np.zeros(4, dtype=np.int64)
    with pytest.raises(UpdateRejected, match=r"client 3: head\.bias has dtype int64"):
        check_arrays(SPEC, arrays, who="client 3")
    with pytest.raises(UpdateRejected, match="client 3: 1 arrays, expected 2"):
        check_arrays(SPEC, _good()[:1], who="client 3")
    with pytest.raises(UpdateRejected, match="client 3: 3 arrays, expected 2"):
        check_arrays(SPEC, [*_good(), np.zeros(1, np.float32)], who="client 3")
    arrays = _good()
    arrays[0] = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(UpdateRejected, match=r"lora_A\.weight has shape \(3, 2\)"):
        check_arrays(SPEC, arrays, who="client 3")
    # ‖ones(2, 3)‖ = √6 ≈ 2.449
    check_arrays(SPEC, _good(), who="client 3", max_norm=2.45)
    with pytest.raises(UpdateRejected, match="norm"):
        check_arrays(SPEC, _good(), who="client 3", max_norm=2.44)


def test_subtract_then_add_recovers_the_new_adapter() -> None:
    """The delta a client sends, added to the adapter it received, is its trained adapter."""
    rng = np.random.default_rng(1)
    old = [rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(5).astype("f4")]
    new = [a + 0.5 for a in old]
    delta = subtract(new, old)
    assert all(d.dtype == np.float32 for d in delta)
    np.testing.assert_allclose(delta[0], 0.5, atol=1e-6)
    for got, want in zip(add(old, delta), new, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_same_seed_builds_the_same_initial_adapter(tiny_bert: Path) -> None:
    """training.seed alone fixes the initial adapter, task head included, whatever ran before."""
    config = _bert_config(tiny_bert)
    torch.manual_seed(1)
    model = build_adapter_model(config, num_labels=NUM_LABELS)
    first = get_adapter_arrays(model)
    torch.manual_seed(2)
    torch.rand(100)
    second = get_adapter_arrays(build_adapter_model(config, num_labels=NUM_LABELS))
    for name, a, b in zip(adapter_spec(model).names, first, second, strict=True):
        assert np.array_equal(a, b), name
    other = get_adapter_arrays(
        build_adapter_model(_bert_config(tiny_bert, "training.seed=5"), num_labels=NUM_LABELS)
    )
    assert not np.array_equal(other[0], first[0])
    assert not np.array_equal(other[-2], first[-2])  # the head's weight


def test_only_adapter_weights_are_trainable(tiny_bert: Path, tiny_llama: Path) -> None:
    """Trainable = LoRA A/B on query/value (+ the classification head); the base is frozen."""
    lora = LAYERS * 2 * (RANK * HIDDEN + HIDDEN * RANK)  # 2 target modules per layer
    head = HIDDEN * NUM_LABELS + NUM_LABELS
    cases = [
        (build_adapter_model(_bert_config(tiny_bert), num_labels=NUM_LABELS), lora + head),
        (build_adapter_model(_llama_config(tiny_llama)), lora),
    ]
    for model, expected in cases:
        spec = adapter_spec(model)
        assert spec.num_params == expected
        assert spec.nbytes == 4 * expected
        assert sum(p.numel() for p in _trainable(model)) == expected
        for name, p in model.named_parameters():
            is_adapter = "lora_" in name or "modules_to_save" in name
            assert p.requires_grad == is_adapter, name
        assert spec.names == tuple(n for n, p in model.named_parameters() if p.requires_grad)


def test_saved_classifier_adapter_loads_in_stock_peft(tiny_bert: Path, tmp_path: Path) -> None:
    """save_adapter's folder + a freshly loaded base in stock PEFT gives the same logits."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = build_adapter_model(_bert_config(tiny_bert), num_labels=NUM_LABELS)
    arrays = _perturbed(get_adapter_arrays(model), seed=2)
    folder = tmp_path / "adapter"
    save_adapter(model, arrays, folder)
    assert (folder / "adapter_config.json").is_file()

    torch.manual_seed(99)  # the stock base gets a different random head, replaced on load
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=NUM_LABELS)
    batch = _batch(int(base.config.vocab_size))
    bare = _logits(base, batch)
    loaded = PeftModel.from_pretrained(base, str(folder))
    expected = _logits(model, batch)
    assert not torch.allclose(bare, expected, atol=1e-3)
    torch.testing.assert_close(_logits(loaded, batch), expected, rtol=0.0, atol=1e-5)


def test_saved_causal_lm_adapter_loads_in_stock_peft(tiny_llama: Path, tmp_path: Path) -> None:
    """The same for a causal LM: stock AutoModelForCausalLM + PeftModel reproduce the logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = build_adapter_model(_llama_config(tiny_llama))
    arrays = _perturbed(get_adapter_arrays(model), seed=3)
    folder = tmp_path / "adapter"
    save_adapter(model, arrays, folder)

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    batch = _batch(int(base.config.vocab_size))
    bare = _logits(base, batch)
    loaded = PeftModel.from_pretrained(base, str(folder))
    expected = _logits(model, batch)
    assert not torch.allclose(bare, expected, atol=1e-3)
    torch.testing.assert_close(_logits(loaded, batch), expected, rtol=0.0, atol=1e-5)

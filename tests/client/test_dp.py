"""DP-SGD invariants on a tiny BERT + LoRA: clipping, noise scale, accounting, cleanup.

Every expectation comes from an independent oracle: plain autograd and torch.optim.SGD
for the update, per-example autograd for the per-sample gradients, the DP-SGD formula
(noise std σ·C/B) for the noise, and Opacus's RDP accountant called directly for σ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch.utils.data import TensorDataset

from client.dp import DPSettings, check_grad_samples, noise_only_step, private_training
from client.local_round import preflight
from client.privacy import Refusal, RoundPlan, plan_round
from client.runtime import Runtime
from client.train import train_adapter
from common.adapters import adapter_spec, build_adapter_model, get_adapter_arrays
from common.config import RunConfig, load_config
from common.errors import PrivatuneError
from common.losses import per_example_losses
from common.privacy.ledger import PrivacyLedger

# Expected here, and documented in common/warnings_filter.py.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
]

TASK = "sequence-classification"
NUM_LABELS = 3
WIDTH = 6
FIRST_WORD_ID = 7  # ids below are the tokenizer's special tokens
OPACUS_PARAM_ATTRS = ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample")
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(model_path: Path, *extra: str) -> RunConfig:
    """A run config on the tiny model; dropout 0 so train-mode forwards are deterministic."""
    return load_config(
        None,
        [
            f"model.path='{model_path}'",
            "model.dropout=0.0",
            "privacy.noise-multiplier=1.0",
            *extra,
        ],
    )


def _model(config: RunConfig, *, perturb: bool = True) -> Any:
    """The adapter model, with LoRA B moved off zero so every adapter weight gets a gradient."""
    model = build_adapter_model(config, num_labels=NUM_LABELS)
    if perturb:
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            for p in _trainable(model):
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _snapshot(model: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in _trainable(model)]


def _restore(model: Any, weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, w in zip(_trainable(model), weights, strict=True):
            p.copy_(w)


def _dataset(rows: int, vocab: int, *, seed: int = 0) -> TensorDataset:
    """Right-padded random token rows (lengths 3..WIDTH) with random labels."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(FIRST_WORD_ID, vocab, (rows, WIDTH), generator=generator)
    lengths = torch.randint(3, WIDTH + 1, (rows,), generator=generator)
    attention = (torch.arange(WIDTH)[None, :] < lengths[:, None]).long()
    input_ids = input_ids * attention  # pad id is 0
    labels = torch.randint(0, NUM_LABELS, (rows,), generator=generator)
    return TensorDataset(input_ids, attention, labels)


def _oracle_loss(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, labels: Any) -> Any:
    """Mean cross-entropy straight from the model's logits (no project code)."""
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    return F.cross_entropy(logits, labels)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _vocab(model: Any) -> int:
    return int(model.config.vocab_size)


# ---------------------------------------------------------------- the DP-SGD step


def test_noiseless_unclipped_dp_step_equals_plain_sgd_step(tiny_bert: Path) -> None:
    """σ=0 and a huge C make one DP-SGD step on a full batch identical to plain SGD."""
    config = _config(tiny_bert)
    model = _model(config)
    data = _dataset(8, _vocab(model))
    input_ids, attention, labels = data.tensors
    lr = 0.5
    start = _snapshot(model)

    sgd = torch.optim.SGD(_trainable(model), lr=lr)
    sgd.zero_grad()
    _oracle_loss(model, input_ids, attention, labels).backward()
    sgd.step()
    expected = _snapshot(model)
    _restore(model, start)
    for p in _trainable(model):
        p.grad = None

    optimizer = torch.optim.SGD(_trainable(model), lr=lr)
    settings = DPSettings(noise_multiplier=0.0, max_grad_norm=1e6)
    with private_training(model, optimizer, data, batch_size=8, settings=settings) as private:
        # Opacus divides by len(dataset) * sample_rate: here exactly the batch size.
        assert private.sample_rate == 1.0
        assert private.optimizer.expected_batch_size == 8
        private.optimizer.zero_grad(set_to_none=True)
        per_example_losses(model, list(data.tensors), TASK).mean().backward()
        private.optimizer.step()
    got = _snapshot(model)

    moved = float((_flat(expected) - _flat(start)).abs().max())
    assert moved > 1e-3, "the plain step must move the weights for the comparison to mean much"
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0.0, atol=1e-5)


def test_single_example_update_is_clipped_to_lr_times_c(tiny_bert: Path) -> None:
    """Batch size 1, σ=0, C below the gradient norm: the update is -lr·C·g/‖g‖."""
    config = _config(tiny_bert)
    model = _model(config)
    data = _dataset(1, _vocab(model), seed=1)
    lr, clip = 1.0, 0.01
    start = _snapshot(model)

    loss = _oracle_loss(model, *data.tensors)
    grad = _flat(list(torch.autograd.grad(loss, _trainable(model))))
    assert float(grad.norm()) > 10 * clip, "the gradient must be larger than C to be clipped"

    optimizer = torch.optim.SGD(_trainable(model), lr=lr)
    settings = DPSettings(noise_multiplier=0.0, max_grad_norm=clip)
    with private_training(model, optimizer, data, batch_size=1, settings=settings) as private:
        assert private.optimizer.expected_batch_size == 1
        private.optimizer.zero_grad(set_to_none=True)
        per_example_losses(model, list(data.tensors), TASK).mean().backward()
        private.optimizer.step()
    update = _flat(_snapshot(model)) - _flat(start)

    assert float(update.norm()) == pytest.approx(lr * clip, rel=1e-5)
    torch.testing.assert_close(update, -lr * clip * grad / grad.norm(), rtol=0.0, atol=1e-7)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_per_sample_gradients_match_autograd_and_clipping(tiny_bert: Path, pooling: str) -> None:
    """Opacus's per-sample grads equal per-example autograd for every adapter weight; clip ≤ C.

    With mean pooling too: its mask comes from a hook, and padded rows must not leak into
    another example's gradient.
    """
    config = _config(tiny_bert, f"model.pooling='{pooling}'")
    model = _model(config)
    data = _dataset(8, _vocab(model), seed=2)
    input_ids, attention, labels = data.tensors
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = _trainable(model)
    start = _snapshot(model)

    # Oracle: each example's gradient on its own (no Opacus attached yet).
    reference = []
    for i in range(8):
        loss_i = _oracle_loss(model, input_ids[i : i + 1], attention[i : i + 1], labels[i : i + 1])
        reference.append(torch.autograd.grad(loss_i, params))
    norms = torch.stack([_flat(list(g)).norm() for g in reference])
    clip = float(norms.median())
    assert float(norms.min()) < clip < float(norms.max()), "some examples clipped, some not"

    optimizer = torch.optim.SGD(params, lr=1.0)
    settings = DPSettings(noise_multiplier=0.0, max_grad_norm=clip)
    with private_training(model, optimizer, data, batch_size=8, settings=settings) as private:
        private.optimizer.zero_grad(set_to_none=True)
        per_example_losses(model, list(data.tensors), TASK).mean().backward()
        check_grad_samples(model)
        seen = {
            n for n, p in model.named_parameters() if getattr(p, "grad_sample", None) is not None
        }
        assert seen == set(names)
        for k, (name, p) in enumerate(zip(names, params, strict=True)):
            assert p.grad_sample.shape == (8, *p.shape), name
            expected = torch.stack([reference[i][k] for i in range(8)])
            torch.testing.assert_close(p.grad_sample, expected, rtol=0.0, atol=1e-4, msg=name)

        per_sample = torch.stack(
            [torch.cat([p.grad_sample[i].reshape(-1) for p in params]).norm() for i in range(8)]
        )
        factor = torch.clamp(clip / per_sample, max=1.0)
        assert torch.all(per_sample * factor <= clip + 1e-6)
        private.optimizer.step()

    # The step is the mean of the clipped per-example gradients (lr 1, B = 8).
    factors = torch.clamp(clip / norms, max=1.0)
    clipped_sum = sum(factors[i] * _flat(list(reference[i])) for i in range(8))
    update = _flat(_snapshot(model)) - _flat(start)
    torch.testing.assert_close(update, -clipped_sum / 8, rtol=0.0, atol=1e-5)


def test_noise_has_std_sigma_c_over_expected_batch(tiny_bert: Path) -> None:
    """With no gradient, each step adds N(0, (σ·C/B)²) per coordinate, B the expected batch."""
    config = _config(tiny_bert)
    model = _model(config)
    data = _dataset(8, _vocab(model), seed=3)
    sigma, clip, lr, batch = 1.5, 0.4, 0.5, 4
    expected_std = sigma * clip / batch
    optimizer = torch.optim.SGD(_trainable(model), lr=lr)
    settings = DPSettings(noise_multiplier=sigma, max_grad_norm=clip)
    torch.manual_seed(0)
    steps = 5
    deltas = []
    with private_training(model, optimizer, data, batch_size=batch, settings=settings) as private:
        assert private.sample_rate == pytest.approx(0.5)
        assert private.optimizer.expected_batch_size == batch
        for _ in range(steps):
            before = _flat(_snapshot(model))
            private.optimizer.zero_grad(set_to_none=True)
            noise_only_step(private.optimizer)
            deltas.append((_flat(_snapshot(model)) - before) / lr)
        entries = private.entries()
    noise = torch.cat(deltas).double()
    n = noise.numel()
    assert n > 10_000
    assert float(noise.std()) == pytest.approx(expected_std, rel=0.05)
    assert abs(float(noise.mean())) < 5 * expected_std / n**0.5
    assert entries == [(sigma, 0.5, steps)]


def test_noise_only_step_without_noise_leaves_weights(tiny_bert: Path) -> None:
    """σ=0 and an empty batch: the step runs (and is counted) but moves nothing."""
    config = _config(tiny_bert)
    model = _model(config)
    data = _dataset(8, _vocab(model), seed=4)
    start = _snapshot(model)
    optimizer = torch.optim.SGD(_trainable(model), lr=1.0)
    settings = DPSettings(noise_multiplier=0.0, max_grad_norm=1.0)
    with private_training(model, optimizer, data, batch_size=4, settings=settings) as private:
        noise_only_step(private.optimizer)
        entries = private.entries()
    for got, want in zip(_snapshot(model), start, strict=True):
        assert torch.equal(got, want)
    assert entries == [(0.0, 0.5, 1)]


@pytest.mark.parametrize(("rows", "batch", "expected"), [(49, 1, 1), (98, 2, 2), (10, 3, 2)])
def test_expected_batch_size_survives_float_rounding(
    tiny_bert: Path, rows: int, batch: int, expected: int
) -> None:
    """B = ⌊N / ⌈N/b⌉⌋ exactly, even where N·q is 0.999… in floats; the step stays finite."""
    batches = -(-rows // batch)
    assert expected == rows // batches
    config = _config(tiny_bert)
    model = _model(config)
    data = _dataset(rows, _vocab(model), seed=5)
    optimizer = torch.optim.SGD(_trainable(model), lr=0.1)
    settings = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    with private_training(model, optimizer, data, batch_size=batch, settings=settings) as private:
        assert private.sample_rate == pytest.approx(1 / batches)
        assert private.optimizer.expected_batch_size == expected
        noise_only_step(private.optimizer)
    assert all(torch.isfinite(p).all() for p in _trainable(model))


# ---------------------------------------------------------------- the training loop


def test_empty_poisson_batches_run_as_noise_only_steps(tiny_bert: Path) -> None:
    """20 rows at batch 1 (q = 0.05) hit empty batches; every step still runs and is counted."""
    config = _config(tiny_bert, "training.batch-size=1", "training.lr=0.05")
    model = _model(config)
    data = _dataset(20, _vocab(model), seed=6)
    steps = 12
    settings = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    result = train_adapter(
        model, data, task=TASK, config=config.training, dp=settings, seed=3, steps=steps
    )
    assert result.steps == steps
    assert result.empty_batches > 0
    assert result.empty_batches < steps
    assert result.examples_seen >= steps - result.empty_batches
    assert np.isfinite(result.loss)
    assert sum(n for _, _, n in result.privacy_entries) == steps
    assert result.privacy_entries == [(1.0, 0.05, steps)]


def _hook_counts(model: Any) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(len(getattr(module, d)) for d in HOOK_DICTS)
        for name, module in model.named_modules()
    }


def _assert_clean(model: Any, reference_hooks: dict[str, tuple[int, ...]]) -> None:
    """No Opacus state left on the model: hooks, per-parameter and per-module attributes."""
    assert _hook_counts(model) == reference_hooks
    assert not hasattr(model, "autograd_grad_sample_hooks")
    for name, p in model.named_parameters():
        for attr in OPACUS_PARAM_ATTRS:
            assert not hasattr(p, attr), f"{name}.{attr}"
        assert p.grad is None, name
    for name, module in model.named_modules():
        assert not getattr(module, "activations", None), f"{name} keeps activations"
        assert not hasattr(module, "max_batch_len"), name
        assert not hasattr(module, "ft_compute_sample_grad"), name


def test_private_round_leaves_no_hooks_and_model_is_reusable(tiny_bert: Path) -> None:
    """After a DP round the model has a fresh model's hooks, no grad_sample, and trains again."""
    config = _config(tiny_bert, "training.batch-size=4", "training.local-steps=3")
    model = _model(config)
    fresh = _hook_counts(_model(config, perturb=False))
    assert _hook_counts(model) == fresh
    data = _dataset(16, _vocab(model), seed=7)
    settings = DPSettings(noise_multiplier=0.5, max_grad_norm=1.0)

    first = train_adapter(model, data, task=TASK, config=config.training, dp=settings, seed=1)
    _assert_clean(model, fresh)
    after_first = _snapshot(model)

    # A plain backward now computes no per-sample gradients: the hooks are really gone.
    _oracle_loss(model, *data.tensors).backward()
    assert not any(hasattr(p, "grad_sample") for p in _trainable(model))
    for p in _trainable(model):
        p.grad = None

    second = train_adapter(model, data, task=TASK, config=config.training, dp=settings, seed=2)
    _assert_clean(model, fresh)
    assert any(not torch.equal(a, b) for a, b in zip(after_first, _snapshot(model), strict=True))
    # Each round reports only its own steps (a new accountant per round).
    assert first.privacy_entries == second.privacy_entries == [(0.5, 0.25, 3)]


def test_private_training_cleans_up_when_the_round_fails(tiny_bert: Path) -> None:
    """An exception inside the round still detaches Opacus and clears per-sample grads."""
    config = _config(tiny_bert)
    model = _model(config)
    fresh = _hook_counts(model)
    data = _dataset(8, _vocab(model), seed=8)
    optimizer = torch.optim.SGD(_trainable(model), lr=0.1)
    settings = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    with (
        pytest.raises(RuntimeError, match="boom"),
        private_training(model, optimizer, data, batch_size=4, settings=settings),
    ):
        per_example_losses(model, list(data.tensors), TASK).mean().backward()
        assert all(hasattr(p, "grad_sample") for p in _trainable(model))
        raise RuntimeError("boom")
    _assert_clean(model, fresh)


def test_check_grad_samples_names_the_missing_parameter() -> None:
    """A trainable parameter without a per-sample gradient fails the check, by name."""
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad_sample = torch.zeros(1, 2, 2)
    with pytest.raises(PrivatuneError, match="bias"):
        check_grad_samples(layer)
    layer.bias.grad_sample = torch.zeros(1, 2)
    check_grad_samples(layer)


def test_plain_training_reduces_loss_on_a_learnable_task(tiny_bert: Path) -> None:
    """Without DP, 30 Adam steps learn 'the second token decides the label' on tiny BERT."""
    config = _config(
        tiny_bert, "training.batch-size=8", "training.optimizer='adam'", "training.lr=0.05"
    )
    model = _model(config, perturb=False)
    generator = torch.Generator().manual_seed(9)
    rows = 24
    keys = torch.tensor([20, 40, 60])  # one word per label
    labels = torch.arange(rows) % NUM_LABELS
    filler = torch.randint(FIRST_WORD_ID, _vocab(model), (rows, WIDTH), generator=generator)
    input_ids = filler.clone()
    input_ids[:, 0] = 2  # [CLS]
    input_ids[:, 1] = keys[labels]
    input_ids[:, -1] = 3  # [SEP]
    attention = torch.ones_like(input_ids)
    data = TensorDataset(input_ids, attention, labels)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = float(_oracle_loss(model, input_ids, attention, labels))
        model.train()
        return loss

    before = eval_loss()
    result = train_adapter(
        model, data, task=TASK, config=config.training, dp=None, seed=0, steps=30
    )
    after = eval_loss()
    assert result.steps == 30 and result.empty_batches == 0
    assert result.examples_seen == 30 * 8
    assert result.privacy_entries == []
    assert after < 0.5 * before


# ---------------------------------------------------------------- preflight and planning


def test_preflight_passes_and_restores_the_adapter(tiny_bert: Path) -> None:
    """The DP preflight succeeds on tiny BERT and leaves every adapter weight bit-identical."""
    config = _config(tiny_bert)
    model = _model(config)
    fresh = _hook_counts(model)
    runtime = Runtime(model=model, tokenizer=None, spec=adapter_spec(model), num_labels=NUM_LABELS)
    before = get_adapter_arrays(model)
    preflight(config, runtime, DPSettings(noise_multiplier=1.0, max_grad_norm=1.0))
    assert runtime.preflight_done
    for a, b in zip(before, get_adapter_arrays(model), strict=True):
        assert np.array_equal(a, b)
    _assert_clean(model, fresh)


def _rdp_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    return float(accountant.get_epsilon(delta=delta))


def test_plan_round_calibrates_sigma_and_refuses_over_budget(tiny_bert: Path) -> None:
    """σ reaches the target over rounds × steps; a ledger with no room left is refused."""
    config = load_config(
        None,
        [
            f"model.path='{tiny_bert}'",
            "privacy.target-epsilon=4.0",
            "privacy.max-grad-norm=0.7",
            "federation.rounds=3",
            "training.local-steps=5",
            "training.batch-size=4",
        ],
    )
    delta, q, total = 1e-5, 0.1, 15  # 40 examples at batch 4: q = 1/10

    fresh = PrivacyLedger(delta=delta, budget=4.0)
    plan = plan_round(config, fresh, 40)
    assert isinstance(plan, RoundPlan)
    sigma = plan.settings.noise_multiplier
    assert plan.entry == (sigma, pytest.approx(q), 5)
    assert plan.settings.max_grad_norm == 0.7
    # Calibrated: every planned step together just fits the target, 5% less noise would not.
    assert 3.9 < _rdp_epsilon(sigma, q, total, delta) <= 4.0
    assert _rdp_epsilon(0.95 * sigma, q, total, delta) > 4.0

    two_rounds_spent = PrivacyLedger(delta=delta, budget=4.0, history=[(sigma, q, 10)])
    assert isinstance(plan_round(config, two_rounds_spent, 40), RoundPlan)

    all_spent = PrivacyLedger(delta=delta, budget=4.0, history=[(sigma, q, total)])
    refused = plan_round(config, all_spent, 40)
    assert isinstance(refused, Refusal)
    assert "budget" in refused.reason
    assert all_spent.history == [(sigma, q, total)], "refusing spends nothing"

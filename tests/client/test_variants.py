"""FFA-LoRA makes averaging exact; plain LoRA's averaging error is measured; FedProx pulls back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.local_round import fit
from client.runtime import get_client_data, get_runtime
from client.train import train_adapter
from common.adapters import add, get_adapter_arrays, set_adapter_arrays
from common.config import load_config
from common.lora import frozen_fingerprint
from server.strategy.fedavg import weighted_mean


def _config(tiny_bert: Path, variant: str, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"model.path='{tiny_bert}'",
            f"lora.variant='{variant}'",
            "privacy.enabled=false",
            "training.optimizer='adam'",
            "training.lr=0.05",
            "training.local-steps=5",
            "data.demo-examples=300",
            "federation.num-clients=3",
            "federation.clients-per-round=3",
            "partition.method='iid'",
            *extra,
        ],
    )


def _products(model, arrays, names) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """B·A for every adapted layer, A taken from the arrays or (frozen) from the model."""
    by_name = dict(zip(names, arrays, strict=True))
    frozen = {n: p.detach().numpy() for n, p in model.named_parameters() if ".lora_A." in n}
    out = {}
    for name, b in by_name.items():
        if ".lora_B." not in name:
            continue
        a_name = name.replace(".lora_B.", ".lora_A.")
        a = by_name.get(a_name, frozen[a_name])
        out[name] = b.astype(np.float64) @ a.astype(np.float64)
    return out


def _round_error(tiny_bert: Path, variant: str) -> tuple[float, float]:
    """Max |B_g·A_g − Σ wᵢ Bᵢ·Aᵢ / Σ wᵢ| after one FedAvg round, and the update's scale."""
    config = _config(tiny_bert, variant)
    runtime = get_runtime(config)
    names = runtime.spec.names
    start = get_adapter_arrays(runtime.model)
    replies = [
        fit(
            config,
            runtime,
            get_client_data(config, runtime, partition_id=pid),
            start,
            server_round=1,
            ledger=None,
        )
        for pid in range(3)
    ]
    weights = [float(r.num_examples) for r in replies]
    new_global = add(start, weighted_mean([r.delta for r in replies], weights))
    global_products = _products(runtime.model, new_global, names)
    client_products = [_products(runtime.model, add(start, r.delta), names) for r in replies]
    error = scale = 0.0
    for layer, product in global_products.items():
        mean = sum(w * c[layer] for w, c in zip(weights, client_products, strict=True)) / sum(
            weights
        )
        error = max(error, float(np.max(np.abs(product - mean))))
        scale = max(scale, float(np.max(np.abs(mean))))
    return error, scale


def test_ffa_lora_trains_and_sends_only_b(tiny_bert: Path) -> None:
    """FFA-LoRA: no A matrix is trainable or sent; A is identical on every build."""
    runtime = get_runtime(_config(tiny_bert, "ffa"))
    assert not [n for n in runtime.spec.names if ".lora_A." in n]
    assert [n for n in runtime.spec.names if ".lora_B." in n]
    plain = get_runtime(_config(tiny_bert, "lora"))
    assert runtime.spec.nbytes < plain.spec.nbytes
    from common.adapters import build_adapter_model

    again = build_adapter_model(_config(tiny_bert, "ffa"), num_labels=5)
    assert frozen_fingerprint(again) == runtime.frozen_fingerprint != ""


def test_ffa_lora_aggregation_is_exact_and_plain_lora_is_not(tiny_bert: Path) -> None:
    """Averaging B with A shared equals averaging B·A; averaging A and B apart does not."""
    ffa_error, ffa_scale = _round_error(tiny_bert, "ffa")
    lora_error, lora_scale = _round_error(tiny_bert, "lora")
    assert ffa_scale > 0 and lora_scale > 0
    assert ffa_error <= 1e-6 * max(ffa_scale, 1.0)
    assert lora_error > 1e-3 * lora_scale  # FedAvg's error on plain LoRA, measured


@pytest.mark.parametrize("private", [False, True])
def test_fedprox_pulls_the_adapter_towards_the_global_one(tiny_bert: Path, private: bool) -> None:
    """With proximal-mu > 0 the trained adapter ends closer to where the round started."""
    from client.dp import DPSettings

    distances = []
    for mu in (0.0, 5.0):
        config = _config(tiny_bert, "lora", f"training.proximal-mu={mu}", "training.lr=0.05")
        runtime = get_runtime(config)
        data = get_client_data(config, runtime, partition_id=0)
        set_adapter_arrays(runtime.model, start := get_adapter_arrays(runtime.model))
        train_adapter(
            runtime.model,
            data.train.dataset,
            task="sequence-classification",
            config=config.training,
            dp=DPSettings(noise_multiplier=0.5, max_grad_norm=1.0) if private else None,
            seed=1,
            steps=8,
        )
        end = get_adapter_arrays(runtime.model)
        set_adapter_arrays(runtime.model, start)
        distances.append(
            float(np.sqrt(sum(np.sum((e - s) ** 2) for e, s in zip(end, start, strict=True))))
        )
    assert distances[1] < 0.8 * distances[0]

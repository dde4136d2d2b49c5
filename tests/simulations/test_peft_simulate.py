"""Every PEFT method end to end: a tiny federation, 2 rounds with DP-SGD, loss goes down.

Two levels: an in-process federation (the client's real round, ``client.local_round.fit`` with
its privacy ledger, and the server's real strategy) for every method on both tasks,
fast enough for the default suite; and the full Flower simulation (Ray): per method
(marked slow), and HetLoRA's heterogeneous ranks (in the default suite).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from client.local_round import evaluate_adapter, fit
from client.privacy import new_ledger
from client.runtime import get_client_data, get_runtime
from common.adapters import get_adapter_arrays
from common.config import RunConfig, load_config
from common.peft_methods import METHODS
from server.strategy.registry import build_strategy
from simulations.run import simulate

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha"),
]

ROOT = Path(__file__).resolve().parents[2]

# Settings under which each method visibly learns in 2 short DP rounds on tiny random
# models (measured): SGD for the classifier; for the causal LM Adam with a small clipping
# norm C, since these methods' per-example gradients are far below the default C = 1 and
# the noise σ·C/B would drown them. Prompt tuning barely moves a tiny random GPT-2 at
# all (≈0.007 even without DP), so its causal-LM case runs on the tiny Llama.
CLASSIFIER = ["training.optimizer='sgd'", "training.lr=0.5", "training.batch-size=32"]
CAUSAL = {
    "lora": ("tiny_gpt2", 0.01, 0.1),
    "prompt-tuning": ("tiny_llama", 0.001, 0.3),
    "prefix-tuning": ("tiny_gpt2", 0.01, 0.1),
    "ia3": ("tiny_gpt2", 0.01, 0.1),
    "bitfit": ("tiny_gpt2", 0.01, 0.1),
}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


CLIENTS = 2


def _train_split_loss(config: RunConfig, runtime, datas, arrays) -> float:  # type: ignore[no-untyped-def]
    """Mean loss of ``arrays`` over the clients' training rows (what DP-SGD minimises)."""
    losses = [evaluate_adapter(config, runtime, replace(d, eval=d.train), arrays) for d in datas]
    return float(np.average([loss for loss, _, _ in losses], weights=[n for _, n, _ in losses]))


def _federate(config: RunConfig, rounds: int = 2) -> tuple[list[float], list[float]]:
    """Rounds of the real client round and server strategy, in this process."""
    from client import runtime as runtimes

    runtimes._RUNTIMES.clear()  # a fresh adapter: models are cached per process
    runtime = get_runtime(config)
    datas = [get_client_data(config, runtime, partition_id=k) for k in range(CLIENTS)]
    ledgers = [new_ledger(config) if config.privacy.enabled else None for _ in range(CLIENTS)]
    start = get_adapter_arrays(runtime.model)
    strategy = build_strategy(
        "fedavg", spec=runtime.spec, initial=start, clients_per_round=CLIENTS, min_clients=2
    )
    arrays, losses, eps = start, [_train_split_loss(config, runtime, datas, start)], []
    for rnd in range(1, rounds + 1):
        replies = [
            fit(config, runtime, d, arrays, server_round=rnd, ledger=ledger)
            for d, ledger in zip(datas, ledgers, strict=True)
        ]
        assert not any(r.metrics["refused"] for r in replies)
        results = [
            (
                None,
                FitRes(
                    Status(Code.OK, ""), ndarrays_to_parameters(r.delta), r.num_examples, r.metrics
                ),
            )
            for r in replies
        ]
        params, _ = strategy.aggregate_fit(rnd, results, [])
        arrays = parameters_to_ndarrays(params)
        losses.append(_train_split_loss(config, runtime, datas, arrays))
        eps.append(max(float(r.metrics.get("epsilon", 0.0)) for r in replies))
    return losses, eps


FEDERATION = [
    "data.demo-examples=300",
    "partition.method='iid'",
    f"federation.num-clients={CLIENTS}",
    f"federation.clients-per-round={CLIENTS}",
    "federation.min-clients=2",
    "federation.evaluate-clients=0",
    "federation.rounds=2",
    "peft.num-virtual-tokens=4",
    "privacy.target-epsilon=8.0",
    "training.local-steps=8",
]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_classifier_federation_with_dp_reduces_loss(method: str, tiny_bert: Path) -> None:
    """Tiny BERT classifier, every method, DP-SGD at ε ≤ 8: the clients' loss goes down."""
    config = load_config(
        ROOT / "examples" / "demo.toml",
        [f"model.path='{tiny_bert}'", f"peft.method='{method}'", *FEDERATION, *CLASSIFIER],
    )
    losses, eps = _federate(config)
    assert losses[2] < losses[0] - 0.01, losses
    assert 0 < eps[0] < eps[1] <= 8.0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_causal_lm_federation_with_dp_reduces_loss(
    method: str, request: pytest.FixtureRequest
) -> None:
    """Instruction tuning of a tiny causal LM, every method, DP-SGD at ε ≤ 8: loss goes down."""
    fixture, clip, lr = CAUSAL[method]
    config = load_config(
        ROOT / "examples" / "instruct.toml",
        [
            f"model.path='{request.getfixturevalue(fixture)}'",
            f"peft.method='{method}'",
            *FEDERATION,
            "model.max-length=48",
            "training.batch-size=16",
            "training.optimizer='adam'",
            f"training.lr={lr}",
            f"privacy.max-grad-norm={clip}",
        ],
    )
    losses, eps = _federate(config)
    assert losses[2] < losses[0] - 0.01, losses
    assert 0 < eps[0] < eps[1] <= 8.0


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_peft_method_in_a_flower_simulation(
    method: str, tiny_bert: Path, tmp_path: Path
) -> None:
    """The full Flower simulation: 2 DP rounds, loss down, only the adapter travels."""
    config = load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{tiny_bert}'",
            f"peft.method='{method}'",
            "peft.num-virtual-tokens=4",
            "data.demo-examples=300",
            "data.server-eval-examples=100",
            "partition.method='iid'",
            "federation.num-clients=2",
            "federation.clients-per-round=2",
            "federation.min-clients=2",
            "federation.rounds=2",
            *CLASSIFIER,
            "training.local-steps=8",
            "training.threads=1",
            "privacy.target-epsilon=8.0",
        ],
    )
    out = tmp_path / "run"
    summary = simulate(config, out, report=False)
    rows = _rows(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["num_clients"] == 2 and not r["failed"] for r in rows[1:])
    assert 0 < rows[2]["epsilon_max"] <= 8.0
    assert rows[2]["eval_loss"] < rows[0]["eval_loss"] - 0.01, [r["eval_loss"] for r in rows]
    assert summary["peft_method"] == method and summary["dp"] is True
    assert summary["adapter_params"] > 0
    # Only the adapter travels: each client's upload is about one adapter in float32.
    per_client = rows[1]["uplink_bytes"] / 2
    assert 4 * summary["adapter_params"] <= per_client < 4 * summary["adapter_params"] + 20_000


@pytest.mark.parametrize(
    "secagg", [pytest.param(False), pytest.param(True, marks=pytest.mark.slow)]
)
def test_hetlora_simulation_clients_train_their_own_ranks(
    secagg: bool, tiny_bert: Path, tmp_path: Path
) -> None:
    """Ranks [2, 8]: each client gets the rank-8 global, trains and sends its own rank; the
    next global is the old one + the weighted mean of the zero-padded deltas (numpy)."""
    from common.hetlora import pad
    from tests.support.fault_mods import load_record, recording_mod

    config = load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{tiny_bert}'",
            "federation.strategy='hetlora'",
            "lora.r=8",
            "lora.ranks=[2, 8]",
            "data.demo-examples=300",
            "data.server-eval-examples=100",
            "partition.method='iid'",
            "federation.num-clients=2",
            "federation.clients-per-round=2",
            "federation.min-clients=2",
            "federation.rounds=2",
            *CLASSIFIER,
            "training.local-steps=4",
            "training.threads=1",
            "privacy.target-epsilon=8.0",
            f"secure-aggregation.enabled={str(secagg).lower()}",
        ],
    )
    out, rec = tmp_path / "run", tmp_path / "rec"
    rec.mkdir()
    summary = simulate(config, out, report=False, client_mods=[recording_mod(rec)])
    assert summary["rounds_completed"] == 2
    assert summary["strategy"] == "hetlora" and summary["lora_client_ranks"] == [2, 8]
    assert summary["peft_method"] == "lora" and summary["lora_rank"] == 8
    from client.runtime import get_runtime

    names = get_runtime(config).spec.names
    a_index = next(i for i, n in enumerate(names) if ".lora_A." in n)
    received, deltas, weights = {}, {}, {}
    for partition, rank in ((0, 2), (1, 8)):
        got, delta, weight, _ = load_record(rec / f"r1-p{partition}.npz")
        assert got[a_index].shape[0] == 8  # the global adapter, full rank
        sent_rank = 8 if secagg else rank  # under SecAgg+ clients pad before masking
        assert delta[a_index].shape[0] == sent_rank
        if rank < 8:
            assert np.any(delta[a_index][:rank] != 0)
        received[partition] = got
        deltas[partition] = pad(names, delta, [a.shape for a in got])
        weights[partition] = weight
    after, _, _, _ = load_record(rec / "r2-p0.npz")
    total = sum(weights.values())
    tolerance = 1e-5 if secagg else 1e-6  # SecAgg+ quantises
    for i, start in enumerate(received[0]):
        mean = sum(weights[p] * deltas[p][i].astype(np.float64) for p in (0, 1)) / total
        np.testing.assert_allclose(after[i], start + mean, rtol=0, atol=tolerance)

"""Framework efficiency: training tokens/s of a federated simulation ÷ a plain PyTorch loop.

The same model (packaged MiniLM + LoRA r = 8), the same clients' data and the very same
batches (each client-round's shuffle is seeded as the client seeds it), no DP, no
evaluation: once as a Flower simulation, once as a plain single-process loop. The goal
figure gives both one core (one Ray actor with one torch thread; a loop with one torch
thread), so it measures the framework's overhead; a second line gives both the whole
machine (one actor per core; a loop with every core's torch threads). Tokens are the
non-padding tokens of the trained batches, identical in both, so the ratio is plain
time ÷ federated time for the same work. Start-up (Ray, imports, model loading and the
first round, which pays them in the actors) is reported separately; rounds 2..R are timed.

    .venv/bin/python -m simulations.benchmarks.efficiency [--quick] [--out FILE]
"""

from __future__ import annotations

import os
import time
from itertools import islice
from typing import Any

from common.config import RunConfig, load_config
from simulations.benchmarks.common import (
    ROOT,
    command,
    goal_text,
    median,
    parser,
    simulate_run,
    table,
    write,
)

GOAL = ">= 0.90"


def config(*, quick: bool, model: str, cpus: int) -> RunConfig:
    clients, rounds, steps = (2, 2, 2) if quick else (4, 5, 5)
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{model}'",
            "model.max-length=64",
            f"federation.num-clients={clients}",
            f"federation.clients-per-round={clients}",
            f"federation.min-clients={clients}",
            f"federation.rounds={rounds}",
            "partition.method='iid'",
            "data.demo-examples=800",
            "data.server-eval=''",
            "data.client-eval-fraction=0.0",
            "privacy.enabled=false",
            f"training.local-steps={steps}",
            "training.batch-size=16",
            f"simulation.total-cpus={cpus}",
        ],
    )


def plain_loop(cfg: RunConfig, rounds: range, threads: int) -> dict[str, Any]:
    """What a user would write without the framework: one process, one model, one loop.

    Returns per-round seconds and tokens for the same client-round batches the federated
    run trains on, plus its start-up (model and data loading).
    """
    import torch
    from torch.utils.data import DataLoader

    from client.local_round import _seed as client_round_seed
    from common.adapters import build_adapter_model
    from common.data.encode import trim_batch
    from common.data.pipeline import client_data, run_labels
    from common.models import load_tokenizer

    torch.set_num_threads(threads)
    started = time.monotonic()
    model = build_adapter_model(cfg, num_labels=len(run_labels(cfg)))
    tokenizer = load_tokenizer(cfg.model.path)
    clients = range(cfg.federation.num_clients)
    data = [client_data(cfg, tokenizer, partition_id=c).train.dataset for c in clients]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.training.lr)
    startup = time.monotonic() - started
    model.train()
    seconds, tokens = [], []
    for server_round in rounds:
        round_started, round_tokens = time.monotonic(), 0
        for c in clients:
            seed = client_round_seed(cfg, str(c), server_round)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            loader = DataLoader(
                data[c], batch_size=cfg.training.batch_size, shuffle=True, generator=generator
            )
            for batch in islice(endless(loader), cfg.training.local_steps):
                input_ids, attention, labels = trim_batch(batch)
                optimizer.zero_grad(set_to_none=True)
                logits = model(input_ids=input_ids, attention_mask=attention).logits
                torch.nn.functional.cross_entropy(logits, labels).backward()
                optimizer.step()
                round_tokens += int(attention.sum())
        seconds.append(time.monotonic() - round_started)
        tokens.append(round_tokens)
    return {"startup_seconds": startup, "round_seconds": seconds, "round_tokens": tokens}


def endless(loader: Any) -> Any:
    """Endless batches, reshuffled each pass (as the client's loop draws them)."""
    while True:
        yield from loader


def compare(*, quick: bool, model: str, cpus: int) -> dict[str, Any]:
    """One federated run and the plain loop over the same rounds, both on ``cpus`` cores."""
    cfg = config(quick=quick, model=model, cpus=cpus)
    fed = simulate_run(cfg)
    timed_rounds = [r["round"] for r in fed.timed]
    plain = plain_loop(cfg, range(timed_rounds[0], timed_rounds[-1] + 1), threads=cpus)
    # Round r trains the same batches in both: tokens/s per round, then medians.
    tokens = plain["round_tokens"]
    fed_tps = median(n / r["round_seconds"] for n, r in zip(tokens, fed.timed, strict=True))
    plain_tps = median(n / s for n, s in zip(tokens, plain["round_seconds"], strict=True))
    return {
        "cores": cpus,
        "clients": cfg.federation.num_clients,
        "local_steps": cfg.training.local_steps,
        "batch_size": cfg.training.batch_size,
        "tokens_per_round": tokens,
        "federated_round_seconds": fed.round_seconds,
        "plain_round_seconds": plain["round_seconds"],
        "federated_tokens_per_second": fed_tps,
        "plain_tokens_per_second": plain_tps,
        "ratio": fed_tps / plain_tps,
        "federated_startup_seconds": fed.startup_seconds,
        "plain_startup_seconds": plain["startup_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "efficiency").parse_args(argv)
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    cores = [1] if args.quick else [1, os.cpu_count() or 1]
    results = [compare(quick=args.quick, model=model, cpus=n) for n in cores]
    goal = results[0]
    report = {
        "benchmark": "efficiency",
        "command": command("efficiency", args.quick),
        "model": "tiny" if args.quick else "all-MiniLM-L6-v2",
        "results": results,
        "ratio": goal["ratio"],
        "goal": GOAL,
        "federated_startup_seconds": goal["federated_startup_seconds"],
    }
    text = table(
        ["cores", "federated tok/s", "plain tok/s", "ratio", "fed start-up s", "plain start-up s"],
        [
            (
                r["cores"],
                r["federated_tokens_per_second"],
                r["plain_tokens_per_second"],
                r["ratio"],
                r["federated_startup_seconds"],
                r["plain_startup_seconds"],
            )
            for r in results
        ],
    )
    text += (
        f"\nfederated ÷ plain on one core: {goal['ratio']:.2f} "
        f"(goal {GOAL}: {goal_text(goal['ratio'], GOAL)})"
    )
    write(report, args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

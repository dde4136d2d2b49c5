"""DP cost: a DP-SGD step's time ÷ a plain step's, same model, same batch, same optimiser.

Packaged MiniLM + LoRA r = 8 (query, value) + head, one torch thread (as a client runs).
The plain step is zero_grad, forward, loss, backward, Adam step; the DP step is the same
through Opacus as the client attaches it (per-sample gradient hooks, clipping, noise).
Blocks of plain and DP steps alternate, so both see the same machine load; medians.

    .venv/bin/python -m simulations.benchmarks.dp_cost [--quick] [--out FILE]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from common.config import RunConfig, load_config
from simulations.benchmarks.common import ROOT, command, goal_text, median, parser, table, write

GOAL = "<= 1.10"


def config(model: str, batch_size: int, max_length: int) -> RunConfig:
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{model}'",
            f"model.max-length={max_length}",
            f"training.batch-size={batch_size}",
            "data.too-long='truncate'",
        ],
    )


def _timed(step: Callable[[], None], n: int) -> list[float]:
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(cfg: RunConfig, *, blocks: int, steps: int) -> dict[str, Any]:
    import torch

    from client.dp import DPSettings, private_training
    from client.train import make_optimizer
    from common.adapters import build_adapter_model
    from common.data.demo import make_demo_classification
    from common.data.encode import trim_batch
    from common.data.pipeline import encode, run_labels, to_examples
    from common.data.readers import Record
    from common.losses import per_example_losses
    from common.models import load_tokenizer

    torch.set_num_threads(1)
    model = build_adapter_model(cfg, num_labels=len(run_labels(cfg)))
    tokenizer = load_tokenizer(cfg.model.path)
    size = cfg.training.batch_size
    rows = make_demo_classification(4 * size, seed=1)
    records = [Record(data=r, source="demo", line=i + 1) for i, r in enumerate(rows)]
    dataset = encode(cfg, to_examples(cfg, records), tokenizer, source="demo").dataset
    batch = trim_batch(dataset[:size])
    params = [p for p in model.parameters() if p.requires_grad]

    def step(optimizer: Any) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            per_example_losses(model, batch, cfg.model.task).mean().backward()
            optimizer.step()

        return run

    plain: list[float] = []
    private: list[float] = []
    settings = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    for _ in range(blocks):
        plain += _timed(step(make_optimizer(params, cfg.training)), steps)[1:]
        optimizer = make_optimizer(params, cfg.training)
        with private_training(model, optimizer, dataset, batch_size=size, settings=settings) as dp:
            private += _timed(step(dp.optimizer), steps)[1:]
    return {
        "batch_size": size,
        "tokens_per_row": int(batch[0].shape[1]),
        "plain_step_seconds": plain,
        "dp_step_seconds": private,
        "plain_median": median(plain),
        "dp_median": median(private),
        "ratio": median(private) / median(plain),
    }


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "dp_cost").parse_args(argv)
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    blocks, steps = (1, 3) if args.quick else (4, 6)
    cases = [(16, 64)] if args.quick else [(16, 64), (32, 64)]
    results = [measure(config(model, b, n), blocks=blocks, steps=steps) for b, n in cases]
    report = {
        "benchmark": "dp_cost",
        "command": command("dp_cost", args.quick),
        "model": "tiny" if args.quick else "all-MiniLM-L6-v2",
        "threads": 1,
        "goal": GOAL,
        "results": results,
    }
    text = table(
        ["batch", "tokens/row", "plain step s", "DP step s", "ratio", "goal"],
        [
            (
                r["batch_size"],
                r["tokens_per_row"],
                r["plain_median"],
                r["dp_median"],
                r["ratio"],
                f"{GOAL} ({goal_text(r['ratio'], GOAL)})",
            )
            for r in results
        ],
    )
    write(report, args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""DP cost: a DP-SGD step's time ÷ a plain step's, same model, same batch, same optimiser.

Packaged MiniLM + LoRA r = 8 (query, value) + head, one torch thread (as a client runs).
The plain step is zero_grad, forward, loss, backward, Adam step; the DP step is the same
through Opacus as the client attaches it (per-sample gradient hooks, clipping, noise).
Plain and DP steps alternate one by one (on two copies of the model), so both see the
same machine load; medians.

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


def _timed(step: Callable[[], None]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def measure(cfg: RunConfig, *, steps: int) -> dict[str, Any]:
    """Plain and DP steps strictly alternated, on two identical copies of the model.

    Opacus's hooks stay on the DP copy for the whole measurement, so the plain copy runs
    exactly the plain step; alternating step by step puts both under the same load.
    """
    import copy

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
    plain_model = build_adapter_model(cfg, num_labels=len(run_labels(cfg)))
    dp_model = copy.deepcopy(plain_model)
    tokenizer = load_tokenizer(cfg.model.path)
    size = cfg.training.batch_size
    rows = make_demo_classification(4 * size, seed=1)
    records = [Record(data=r, source="demo", line=i + 1) for i, r in enumerate(rows)]
    dataset = encode(cfg, to_examples(cfg, records), tokenizer, source="demo").dataset
    batch = trim_batch(dataset[:size])

    def step(model: Any, optimizer: Any) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            per_example_losses(model, batch, cfg.model.task).mean().backward()
            optimizer.step()

        return run

    def trainable(model: Any) -> list[Any]:
        return [p for p in model.parameters() if p.requires_grad]

    plain_step = step(plain_model, make_optimizer(trainable(plain_model), cfg.training))
    settings = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0)
    dp_optimizer = make_optimizer(trainable(dp_model), cfg.training)
    plain: list[float] = []
    private: list[float] = []
    with private_training(
        dp_model, dp_optimizer, dataset, batch_size=size, settings=settings
    ) as dp:
        dp_step = step(dp_model, dp.optimizer)
        plain_step(), dp_step()  # warm-up
        for _ in range(steps):
            plain.append(_timed(plain_step))
            private.append(_timed(dp_step))
    return {
        "batch_size": size,
        "tokens_per_row": int(batch[0].shape[1]),
        "plain_step_seconds": plain,
        "dp_step_seconds": private,
        "plain_median": median(plain),
        "dp_median": median(private),
        "ratio": median(private) / median(plain),
        "median_pair_ratio": median(d / p for d, p in zip(private, plain, strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "dp_cost").parse_args(argv)
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    steps = 2 if args.quick else 25
    cases = [(16, 64)] if args.quick else [(16, 64), (32, 64)]
    results = [measure(config(model, b, n), steps=steps) for b, n in cases]
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

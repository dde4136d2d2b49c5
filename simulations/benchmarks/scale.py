"""Scale: 1,000 registered virtual clients, 10 sampled per round.

Peak memory of the whole process tree (this process, Ray's GCS and raylet and every Ray
worker, sampled with psutil every 0.2 s) and the median round time (rounds 2-9) for 10,
100 and 1,000 registered clients, with 10 sampled per round and the same rows per
client, so a round's work is constant and its time must stay flat. Uses a tiny random
BERT with MiniLM's tokenizer (simulations/benchmarks/tiny.py) so that the engine, not the
model, is measured; DP-SGD is on, as in the demo. Peak memory is the sum of resident set
sizes, which counts pages shared between processes (Ray's object store, libraries)
once per process: an upper bound.

    .venv/bin/python -m simulations.benchmarks.scale [--quick] [--out FILE]
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.config import RunConfig, load_config
from simulations.benchmarks.common import (
    ROOT,
    command,
    goal_text,
    parser,
    simulate_run,
    table,
    write,
)
from simulations.benchmarks.tiny import TINY_DESCRIPTION, tiny_minilm

GIB = 2**30
GOALS = {"peak_memory_gib": "<= 4", "round_time_ratio": "<= 1.25"}  # largest ÷ smallest
ROWS_PER_CLIENT = 10
SAMPLED = 10


def tree_rss() -> int:
    """Resident bytes of this process and all its descendants."""
    import psutil

    me = psutil.Process(os.getpid())
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


@contextmanager
def peak_memory(interval: float = 0.2) -> Iterator[dict[str, int]]:
    """Sample the process tree's memory in a thread; ``peak`` holds the maximum seen."""
    seen = {"peak": tree_rss()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            seen["peak"] = max(seen["peak"], tree_rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def write_rows(path: Path, count: int) -> Path:
    from common.data.demo import make_demo_classification

    with path.open("w") as f:
        for row in make_demo_classification(count, seed=5):
            f.write(json.dumps({"text": row["text"], "label": row["label"]}) + "\n")
    return path


def config(source: Path, registered: int, rounds: int) -> RunConfig:
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{tiny_minilm()}'",
            f"data.source='{source}'",
            "data.server-eval=''",
            "partition.method='iid'",
            f"federation.num-clients={registered}",
            f"federation.clients-per-round={SAMPLED}",
            "federation.min-clients=8",
            f"federation.rounds={rounds}",
            "training.batch-size=4",
            "training.local-steps=2",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "scale").parse_args(argv)
    sizes, rounds = ((10,), 2) if args.quick else ((10, 100, 1000), 9)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for registered in sizes:
            source = write_rows(
                Path(tmp) / f"rows-{registered}.jsonl", ROWS_PER_CLIENT * registered
            )
            with peak_memory() as memory:
                run = simulate_run(config(source, registered, rounds))
            results.append(
                {
                    "registered": registered,
                    "sampled_per_round": SAMPLED,
                    "round_seconds": run.round_seconds,
                    "median_round": run.median_round,
                    "startup_seconds": run.startup_seconds,
                    "peak_memory_bytes": memory["peak"],
                }
            )
    base = results[0]["median_round"]
    for r in results:
        r["round_time_ratio"] = r["median_round"] / base
    largest = results[-1]
    peak_gib = max(r["peak_memory_bytes"] for r in results) / GIB
    report = {
        "benchmark": "scale",
        "command": command("scale", args.quick),
        "model": TINY_DESCRIPTION,
        "rows_per_client": ROWS_PER_CLIENT,
        "rounds": rounds,
        "results": results,
        "peak_memory_gib": peak_gib,
        "round_time_ratio": largest["round_time_ratio"],
        "goals": GOALS,
    }
    text = table(
        ["registered", "sampled", "round s (median)", "÷ smallest", "start-up s", "peak GiB"],
        [
            (
                r["registered"],
                r["sampled_per_round"],
                r["median_round"],
                r["round_time_ratio"],
                r["startup_seconds"],
                r["peak_memory_bytes"] / GIB,
            )
            for r in results
        ],
    )
    text += (
        f"\npeak memory {peak_gib:.2f} GiB (goal {GOALS['peak_memory_gib']} GiB: "
        f"{goal_text(peak_gib, GOALS['peak_memory_gib'])}); round time at "
        f"{largest['registered']} ÷ at {results[0]['registered']}: "
        f"{largest['round_time_ratio']:.2f} (goal {GOALS['round_time_ratio']}: "
        f"{goal_text(largest['round_time_ratio'], GOALS['round_time_ratio'])})"
    )
    write(report, args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

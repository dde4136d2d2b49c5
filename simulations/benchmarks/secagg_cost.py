"""Secure aggregation cost: round time with SecAgg+ ÷ without, and uplink bytes ÷ adapter.

Runs the same small federation (packaged MiniLM, r = 8, one local step so aggregation is
not hidden behind training) with and without SecAgg+, side by side in one process, for
5 and 20 clients (and at 20 clients with fewer key shares), and reports medians of the
per-round times (round 1, which includes warm-up, is left out).

    .venv/bin/python -m simulations.benchmarks.secagg_cost [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common.adapters import adapter_spec, build_adapter_model
from common.config import RunConfig, load_config
from simulations.run import simulate

ROOT = Path(__file__).resolve().parents[2]


def _config(clients: int, rounds: int, secure: bool, shares: float) -> RunConfig:
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"federation.num-clients={clients}",
            f"federation.clients-per-round={clients}",
            "federation.min-clients=2",
            f"federation.rounds={rounds}",
            "partition.method='iid'",
            f"data.demo-examples={max(40 * clients, 200)}",
            "data.server-eval-examples=40",
            "privacy.enabled=false",
            "training.local-steps=1",
            "training.batch-size=8",
            f"secure-aggregation.enabled={'true' if secure else 'false'}",
            f"secure-aggregation.num-shares={shares}",
        ],
    )


def _run(config: RunConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.monotonic()
        simulate(config, out, report=False)
        wall = time.monotonic() - started
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["round"] > 0]
    timed = trained[1:] or trained
    clients = config.federation.clients_per_round
    return {
        "round_seconds": [r["round_seconds"] for r in trained],
        "round_seconds_median": statistics.median(r["round_seconds"] for r in timed),
        "uplink_bytes_per_client_round": statistics.median(
            r["uplink_bytes"] / clients for r in timed
        ),
        "wall_seconds": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 clients, 2 rounds: a smoke run")
    parser.add_argument("--out", default="runs/benchmarks/secagg_cost.json")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else 4
    cases = [(3, 1.0)] if args.quick else [(5, 1.0), (20, 1.0), (20, 0.35)]
    raw = adapter_spec(build_adapter_model(_config(5, 1, False, 1.0), num_labels=5)).nbytes
    results = []
    for clients, shares in cases:
        # Side by side: plain and secure back to back for each case.
        plain = _run(_config(clients, rounds, False, shares))
        secure = _run(_config(clients, rounds, True, shares))
        results.append(
            {
                "clients": clients,
                "num_shares": shares,
                "plain": plain,
                "secagg": secure,
                "time_ratio": secure["round_seconds_median"] / plain["round_seconds_median"],
                "uplink_ratio_plain": plain["uplink_bytes_per_client_round"] / raw,
                "uplink_ratio_secagg": secure["uplink_bytes_per_client_round"] / raw,
            }
        )
    report = {
        "benchmark": "secagg_cost",
        "command": "python -m simulations.benchmarks.secagg_cost"
        + (" --quick" if args.quick else ""),
        "raw_adapter_bytes": raw,
        "rounds": rounds,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"raw adapter: {raw} bytes (float32)")
    print(
        f"{'clients':>7} {'shares':>6} {'plain s':>8} {'SecAgg s':>8} {'ratio':>6} "
        f"{'up/raw plain':>12} {'up/raw SecAgg':>13}"
    )
    for r in results:
        print(
            f"{r['clients']:>7} {r['num_shares']:>6} {r['plain']['round_seconds_median']:>8.2f} "
            f"{r['secagg']['round_seconds_median']:>8.2f} {r['time_ratio']:>6.2f} "
            f"{r['uplink_ratio_plain']:>12.2f} {r['uplink_ratio_secagg']:>13.2f}"
        )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

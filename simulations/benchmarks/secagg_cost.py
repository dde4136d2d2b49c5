"""Secure aggregation cost: round time with SecAgg+ ÷ without, and uplink bytes ÷ adapter.

Runs the same small federation (packaged MiniLM, r = 8, one local step so aggregation is
not hidden behind training) with and without SecAgg+, back to back in one process, for
5 and 20 clients (and at 20 clients with fewer key shares), and reports medians of the
per-round times (round 1, which includes warm-up, is left out). For each share count it
states what SecAgg+ can survive: a client's masks are rebuilt from ``threshold`` of its
``shares`` holders, so up to ``shares - threshold`` of them may drop out.

    .venv/bin/python -m simulations.benchmarks.secagg_cost [--quick] [--out FILE]
"""

from __future__ import annotations

from typing import Any

from common.adapters import adapter_spec, build_adapter_model
from common.config import RunConfig, load_config
from simulations.benchmarks.common import (
    ROOT,
    SimRun,
    command,
    goal_text,
    median,
    parser,
    simulate_run,
    table,
    write,
)

GOAL = "<= 1.25"  # SecAgg+ round ÷ plain round at 20 clients


def config(
    clients: int, rounds: int, *, secure: bool, shares: float = 1.0, model: str = "default"
) -> RunConfig:
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{model}'",
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


def dropout_tolerance(clients: int, shares: float, threshold: float = 0.66) -> dict[str, int]:
    """Shares per client, the threshold to unmask it, and the dropouts that leaves room for.

    Flower's rule (SecAggPlusWorkflow): a fraction is taken of the sampled clients and
    rounded, an even count below all clients is made odd, ≤ 2 means everyone; the
    threshold is the rounded fraction of the shares.
    """
    if shares <= 1:
        count = round(shares * clients)
        if count < clients and count % 2 == 0:
            count += 1
        if count <= 2:
            count = clients
    else:
        count = int(shares)
    needed = round(threshold * count) if threshold <= 1 else int(threshold)
    return {"shares": count, "threshold": needed, "tolerated_dropouts": count - needed}


def raw_adapter_bytes(model: str = "default") -> int:
    """fp32 bytes of the adapter (LoRA + head) the demo config trains."""
    cfg = config(5, 1, secure=False, model=model)
    return adapter_spec(build_adapter_model(cfg, num_labels=5)).nbytes


def uplink_per_client_round(run: SimRun, clients: int) -> float:
    return median(r["uplink_bytes"] / clients for r in run.timed)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "secagg_cost").parse_args(argv)
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    rounds = 2 if args.quick else 4
    cases = [(3, 1.0)] if args.quick else [(5, 1.0), (20, 1.0), (20, 0.35)]
    raw = raw_adapter_bytes(model)
    results: list[dict[str, Any]] = []
    for clients, shares in cases:
        # Side by side: plain and secure back to back for each case.
        plain = simulate_run(config(clients, rounds, secure=False, shares=shares, model=model))
        secure = simulate_run(config(clients, rounds, secure=True, shares=shares, model=model))
        results.append(
            {
                "clients": clients,
                "num_shares": shares,
                **dropout_tolerance(clients, shares),
                "plain_round_seconds": plain.round_seconds,
                "secagg_round_seconds": secure.round_seconds,
                "plain_median": plain.median_round,
                "secagg_median": secure.median_round,
                "time_ratio": secure.median_round / plain.median_round,
                "uplink_ratio_plain": uplink_per_client_round(plain, clients) / raw,
                "uplink_ratio_secagg": uplink_per_client_round(secure, clients) / raw,
            }
        )
    report = {
        "benchmark": "secagg_cost",
        "command": command("secagg_cost", args.quick),
        "model": "tiny" if args.quick else "all-MiniLM-L6-v2",
        "raw_adapter_bytes": raw,
        "rounds": rounds,
        "goal_time_ratio_20_clients": GOAL,
        "results": results,
    }
    text = table(
        [
            "clients",
            "shares",
            "threshold",
            "dropouts ok",
            "plain s",
            "SecAgg s",
            "ratio",
            "goal",
            "up/raw plain",
            "up/raw SecAgg",
        ],
        [
            (
                r["clients"],
                r["shares"],
                r["threshold"],
                r["tolerated_dropouts"],
                r["plain_median"],
                r["secagg_median"],
                r["time_ratio"],
                f"{GOAL} ({goal_text(r['time_ratio'], GOAL)})" if r["clients"] == 20 else "",
                r["uplink_ratio_plain"],
                r["uplink_ratio_secagg"],
            )
            for r in results
        ],
    )
    write(report, args.out, f"raw adapter: {raw} bytes (float32)\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Secure aggregation cost: round time with SecAgg+ ÷ without, and uplink bytes ÷ adapter.

Runs the same federation (packaged MiniLM, LoRA r = 8) with and without SecAgg+, back to
back in one process, and reports medians of the per-round times (round 1, which includes
warm-up, is left out):

- one local step of 8 examples, no DP, so the round is almost all protocol (the worst
  case: 5 clients; 20 clients with everyone sharing and with ``num-shares = 0.25``);
- 20 clients training as examples/demo.toml does (6 local DP-SGD steps, ε = 8) but on
  batches of 8 rather than 32, everyone sharing and ``num-shares = 0.25``: the goal rows
  (≤ 1.25). ``--demo-batch`` uses the demo's batch of 32 instead (not in the suite: a
  20-client round is then 45-90 s on 2 cores).

One plain run serves every share setting of a case and sits between its secure runs.
For each share count it states what SecAgg+ survives: a client's masks are rebuilt from
``threshold`` of the ``shares`` holders (itself and its neighbours), so up to
``shares - threshold`` of them may drop out.

    .venv/bin/python -m simulations.benchmarks.secagg_cost [--quick] [--demo-batch] [--out FILE]
"""

from __future__ import annotations

from dataclasses import dataclass
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

GOAL = "<= 1.25"  # SecAgg+ round ÷ plain round at 20 clients, with the demo's training


@dataclass(frozen=True)
class Workload:
    """What each client does in a round, besides the protocol."""

    name: str
    examples_per_client: int
    overrides: tuple[str, ...]


# One local step: the round is almost all protocol (the worst case for the ratio).
ONE_STEP = Workload(
    "1 step × 8, no DP",
    40,
    ("training.local-steps=1", "training.batch-size=8", "privacy.enabled=false"),
)
# examples/demo.toml's training: 6 local DP-SGD steps (ε = 8, Adam) on inputs of ≤ 32
# tokens, but of 8 examples rather than 32 (100 per client), so that the suite can afford
# 20 clients: a batch of 32 makes a 20-client round ~45-90 s on 2 cores.
DEMO_STEPS = Workload("6 DP steps × 8", 100, ("training.batch-size=8",))
# The demo's training exactly (batch 32, 400 examples per client as its 2,000 over 5
# organisations): `--demo-batch`, outside the suite (about 20 minutes).
DEMO = Workload("demo: 6 DP steps × 32", 400, ())
DEMO_ROUNDS = 4


def config(
    clients: int,
    rounds: int,
    *,
    secure: bool,
    shares: float = 1.0,
    model: str = "default",
    workload: Workload = ONE_STEP,
) -> RunConfig:
    """The benchmark federation; a plain run ignores ``shares`` (so one serves every case)."""
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{model}'",
            f"federation.num-clients={clients}",
            f"federation.clients-per-round={clients}",
            "federation.min-clients=2",
            f"federation.rounds={rounds}",
            "partition.method='iid'",
            f"data.demo-examples={max(workload.examples_per_client * clients, 200)}",
            "data.server-eval-examples=40",
            *workload.overrides,
            f"secure-aggregation.enabled={'true' if secure else 'false'}",
            f"secure-aggregation.num-shares={shares if secure else 1.0}",
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


def _measure(
    clients: int, workload: Workload, shares: list[float], rounds: int, model: str
) -> list[tuple[float, SimRun, SimRun]]:
    """(shares, plain run, secure run) for each share count; one plain run serves them all.

    Side by side in this process: the plain run sits between the secure ones (or after
    the only one), so a change of machine load over the runs hits both sides alike.
    """

    def run(secure: bool, share: float = 1.0) -> SimRun:
        return simulate_run(
            config(clients, rounds, secure=secure, shares=share, model=model, workload=workload)
        )

    if len(shares) == 1:
        plain = run(False)
        secure = {shares[0]: run(True, shares[0])}
    else:
        secure = {shares[0]: run(True, shares[0])}
        plain = run(False)
        secure.update({s: run(True, s) for s in shares[1:]})
    return [(s, plain, secure[s]) for s in shares]


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__, "secagg_cost")
    cli.add_argument(
        "--demo-batch",
        action="store_true",
        help="train the 20-client realistic case with the demo's batch of 32 (slow)",
    )
    args = cli.parse_args(argv)
    realistic = DEMO if args.demo_batch else DEMO_STEPS
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    # (clients, workload, share settings, rounds); round 1 (warm-up) is never timed.
    groups: list[tuple[int, Workload, list[float], int]] = (
        [(3, ONE_STEP, [1.0], 2)]
        if args.quick
        else [
            (5, ONE_STEP, [1.0], 4),
            (20, ONE_STEP, [1.0, 0.25], 4),
            (20, realistic, [1.0, 0.25], DEMO_ROUNDS),
        ]
    )
    raw = raw_adapter_bytes(model)
    results: list[dict[str, Any]] = []
    for clients, workload, shares, rounds in groups:
        for share, plain, secure in _measure(clients, workload, shares, rounds, model):
            goal = GOAL if clients == 20 and workload is realistic else None
            results.append(
                {
                    "clients": clients,
                    "workload": workload.name,
                    "rounds": rounds,
                    "num_shares": share,
                    **dropout_tolerance(clients, share),
                    "plain_round_seconds": plain.round_seconds,
                    "secagg_round_seconds": secure.round_seconds,
                    "plain_median": plain.median_round,
                    "secagg_median": secure.median_round,
                    "time_ratio": secure.median_round / plain.median_round,
                    "goal": goal,
                    "uplink_ratio_plain": uplink_per_client_round(plain, clients) / raw,
                    "uplink_ratio_secagg": uplink_per_client_round(secure, clients) / raw,
                }
            )
    report = {
        "benchmark": "secagg_cost",
        "command": command("secagg_cost", args.quick),
        "model": "tiny" if args.quick else "all-MiniLM-L6-v2",
        "raw_adapter_bytes": raw,
        "goal_time_ratio_20_clients": GOAL,
        "results": results,
    }
    text = table(
        [
            "clients",
            "workload",
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
                r["workload"],
                r["shares"],
                r["threshold"],
                r["tolerated_dropouts"],
                r["plain_median"],
                r["secagg_median"],
                r["time_ratio"],
                f"{r['goal']} ({goal_text(r['time_ratio'], r['goal'])})" if r["goal"] else "",
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

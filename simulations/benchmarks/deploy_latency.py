"""Deployed round time ÷ simulated round time, same model, clients, steps, DP and SecAgg+.

Starts a loopback deployment (TLS SuperLink with node authentication and two SuperNodes,
deploy/local.py) and a simulation of the same two clients, one after the other in this
run, and compares the median round time (round 1, which includes warm-up, is left out).

    .venv/bin/python -m simulations.benchmarks.deploy_latency [--quick] [--out FILE]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common.config import load_config
from common.data.demo import make_demo_classification
from deploy.local import LocalDeployment, write_run_toml
from simulations.benchmarks.common import SimRun, command, metrics, parser, simulate_run, write

ORGS = ("org1", "org2")
GOAL = "<= 2"


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "deploy_latency").parse_args(argv)
    rounds, steps = (2, 2) if args.quick else (6, 6)
    rows = [{"text": r["text"], "label": r["label"]} for r in make_demo_classification(400, seed=3)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_toml = write_run_toml(
            root / "run.toml", clients=2, rounds=rounds, steps=steps, lr=0.03, batch_size=32
        )
        dep = LocalDeployment(root=root / "deployment")
        dep.root.mkdir()
        try:
            dep.start_federation({org: rows[i::2] for i, org in enumerate(ORGS)})
            done = dep.run(run_toml, root / "deployed")
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
        finally:
            dep.stop()
        deployed = SimRun(metrics(root / "deployed"), {}, 0.0)
        config = load_config(run_toml, ["partition.method='iid'", "data.demo-examples=400"])
        simulated = simulate_run(config)
    ratio = deployed.median_round / simulated.median_round
    report = {
        "benchmark": "deploy_latency",
        "command": command("deploy_latency", args.quick),
        "rounds": rounds,
        "local_steps": steps,
        "deployed_round_seconds": deployed.round_seconds,
        "simulated_round_seconds": simulated.round_seconds,
        "deployed_median": deployed.median_round,
        "simulated_median": simulated.median_round,
        "ratio": ratio,
        "goal": GOAL,
    }
    text = (
        f"deployed round (median): {deployed.median_round:.1f} s; simulated: "
        f"{simulated.median_round:.1f} s; ratio {ratio:.2f} (goal {GOAL})"
    )
    write(report, args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

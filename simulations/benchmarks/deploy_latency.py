"""Deployed round time ÷ simulated round time, same model, clients, steps, DP and SecAgg+.

Starts a loopback deployment (TLS SuperLink with node authentication and two SuperNodes,
deploy/local.py) and a simulation of the same two clients, one after the other in this
run, and compares the median round time (round 1, which includes warm-up, is left out).

    .venv/bin/python -m simulations.benchmarks.deploy_latency [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common.config import load_config
from common.data.demo import make_demo_classification
from deploy.local import LocalDeployment, write_run_toml
from simulations.run import simulate

ORGS = ("org1", "org2")


def _median_round(folder: Path) -> tuple[float, list[float]]:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["round_seconds"] for r in rows if r["round"] > 0]
    timed = seconds[1:] or seconds
    return statistics.median(timed), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 steps: a smoke run")
    parser.add_argument("--out", default="runs/benchmarks/deploy_latency.json")
    args = parser.parse_args(argv)
    rounds, steps = (2, 2) if args.quick else (4, 6)
    rows = [{"text": r["text"], "label": r["label"]} for r in make_demo_classification(400, seed=3)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_toml = write_run_toml(
            root / "run.toml", clients=2, rounds=rounds, steps=steps, lr=0.03, batch_size=32
        )
        dep = LocalDeployment(root=root / "deployment")
        dep.root.mkdir()
        try:
            for i, org in enumerate(ORGS):
                dep.add_org(org, rows[i::2])
            dep.start_coordinator()
            dep.register(*ORGS)
            for org in ORGS:
                dep.start_node(org)
            time.sleep(5)
            done = dep.run(run_toml, root / "deployed")
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
        finally:
            dep.stop()
        deployed, deployed_all = _median_round(root / "deployed")
        config = load_config(run_toml, ["partition.method='iid'", "data.demo-examples=400"])
        simulate(config, root / "simulated", report=False)
        simulated, simulated_all = _median_round(root / "simulated")
    report = {
        "benchmark": "deploy_latency",
        "command": "python -m simulations.benchmarks.deploy_latency"
        + (" --quick" if args.quick else ""),
        "rounds": rounds,
        "local_steps": steps,
        "deployed_round_seconds": deployed_all,
        "simulated_round_seconds": simulated_all,
        "deployed_median": deployed,
        "simulated_median": simulated,
        "ratio": deployed / simulated,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"deployed round (median): {deployed:.1f} s; simulated: {simulated:.1f} s; "
        f"ratio {deployed / simulated:.2f} (goal ≤ 2)"
    )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

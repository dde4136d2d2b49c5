"""The whole benchmark suite: ``python -m simulations.benchmarks [--quick] [--only NAME ...]``.

Runs every benchmark in one process (so runs two benchmarks share are run once), each
writing its JSON under ``runs/benchmarks/``, then prints one table of headline figures
with their goals and writes ``runs/benchmarks/suite.json``. ``--quick`` is a smoke run
of every script (tiny models, few rounds; under 2 minutes on 2 cores); its figures
mean nothing and nothing is asserted about them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulations.benchmarks.common import OUT_DIR, goal_text, table

Row = tuple[str, float, str | None]


def _dp(r: dict) -> list[Row]:
    return [
        (f"DP-SGD step ÷ plain step, batch {x['batch_size']}", x["ratio"], r["goal"])
        for x in r["results"]
    ]


def _efficiency(r: dict) -> list[Row]:
    rows: list[Row] = [
        (
            f"federated tokens/s ÷ plain PyTorch loop, {x['cores']} core(s), start-up excluded",
            x["ratio"],
            r["goal"] if i == 0 else None,
        )
        for i, x in enumerate(r["results"])
    ]
    return [*rows, ("federated start-up, seconds", r["federated_startup_seconds"], None)]


def _traffic(r: dict) -> list[Row]:
    rows: list[Row] = [
        (
            f"uplink per client-round ÷ raw adapter, SecAgg+ {'on' if u['secagg'] else 'off'}",
            u["ratio"],
            r["goals"]["uplink_secagg"] if u["secagg"] else None,
        )
        for u in r["uplink"]
    ]
    rows += [
        (
            f"adapter ÷ full model, {s['variant']} r=8",
            s["ratio"],
            r["goals"]["adapter_" + s["variant"]],
        )
        for s in r["adapter_share"]
    ]
    return rows


def _secagg(r: dict) -> list[Row]:
    return [
        (
            f"SecAgg+ round ÷ plain, {x['clients']} clients, {x['workload']}, "
            f"{x['shares']} shares (tolerates {x['tolerated_dropouts']} dropouts)",
            x["time_ratio"],
            x["goal"],
        )
        for x in r["results"]
    ]


def _scale(r: dict) -> list[Row]:
    largest, smallest = r["results"][-1], r["results"][0]
    return [
        (
            "peak memory of the process tree, GiB",
            r["peak_memory_gib"],
            r["goals"]["peak_memory_gib"],
        ),
        (
            f"round time, {largest['registered']} ÷ {smallest['registered']} registered clients",
            r["round_time_ratio"],
            r["goals"]["round_time_ratio"],
        ),
    ]


def _utility(r: dict) -> list[Row]:
    rows: list[Row] = [
        ("centralised accuracy (fortunes, 5 categories)", r["results"]["central"]["accuracy"], None)
    ]
    rows += [
        (f"{name} accuracy ÷ centralised", x["ratio_to_central"], r["goals"].get(name))
        for name, x in r["results"].items()
        if name != "central"
    ]
    return rows


# Order: the new figures first, the longest (SecAgg+ at 20 clients) last; traffic runs
# before secagg_cost so that the 5-client pair they share is run once.
SUITE: dict[str, Callable[[dict], list[Row]]] = {
    "dp_cost": _dp,
    "efficiency": _efficiency,
    "scale": _scale,
    "traffic": _traffic,
    "utility": _utility,
    "secagg_cost": _secagg,
}


def run_suite(names: list[str], *, quick: bool, out_dir: Path) -> dict[str, Any]:
    """Run the named benchmarks; a failing one is reported and the others still run."""
    summary: dict[str, Any] = {"quick": quick, "benchmarks": {}}
    for name in names:
        module = importlib.import_module(f"simulations.benchmarks.{name}")
        out = out_dir / f"{name}.json"
        started = time.monotonic()
        print(f"\n=== {name} ===", flush=True)
        try:
            module.main([*(["--quick"] if quick else []), "--out", str(out)])
            rows = SUITE[name](json.loads(out.read_text()))
            status = "ok"
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            rows, status = [], "failed"
        summary["benchmarks"][name] = {
            "status": status,
            "seconds": round(time.monotonic() - started, 1),
            "figures": [
                {
                    "figure": f,
                    "value": v,
                    "goal": g,
                    "met": None if g is None else goal_text(v, g) == "met",
                }
                for f, v, g in rows
            ],
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run of every script (< 2 min)")
    p.add_argument("--only", nargs="+", choices=list(SUITE), help="run only these benchmarks")
    p.add_argument("--out-dir", default=str(OUT_DIR), help="folder for the JSON files")
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir)
    started = time.monotonic()
    summary = run_suite(args.only or list(SUITE), quick=args.quick, out_dir=out_dir)
    summary["seconds"] = round(time.monotonic() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [
        (
            name,
            f["figure"],
            f["value"],
            f["goal"],
            "" if f["met"] is None else ("met" if f["met"] else "MISSED"),
        )
        for name, b in summary["benchmarks"].items()
        for f in b["figures"]
    ]
    print("\n" + table(["benchmark", "figure", "measured", "goal", ""], rows))
    failed = [n for n, b in summary["benchmarks"].items() if b["status"] != "ok"]
    print(
        f"\nsuite: {summary['seconds']:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    print(f"written: {out_dir / 'suite.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

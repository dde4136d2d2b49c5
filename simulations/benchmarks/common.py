"""What every benchmark shares: the command line, medians, simulation runs, table and JSON.

Every figure is a ratio of two measurements taken side by side in one run (the machine is
shared and noisy), and every benchmark prints a table and writes its figures as JSON
under ``runs/benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.warnings_filter import silence_expected_warnings

silence_expected_warnings()

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = Path("runs/benchmarks")


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """``--quick`` (a smoke run: the script still works, its times mean nothing) and ``--out``."""
    p = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run; its figures mean nothing")
    p.add_argument("--out", default=str(OUT_DIR / f"{name}.json"), help="JSON file to write")
    return p


def command(module: str, quick: bool) -> str:
    return f"python -m simulations.benchmarks.{module}" + (" --quick" if quick else "")


def median(values: Iterable[float]) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def metrics(folder: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (round 0 is the untrained adapter)."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@dataclass
class SimRun:
    """One finished simulation: its metrics rows, summary and wall-clock seconds."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    wall_seconds: float
    trained: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.trained = [r for r in self.rows if r["round"] > 0]

    @property
    def timed(self) -> list[dict[str, Any]]:
        """Trained rounds without round 1, which pays the clients' model loading."""
        return self.trained[1:] or self.trained

    @property
    def round_seconds(self) -> list[float]:
        return [r["round_seconds"] for r in self.trained]

    @property
    def median_round(self) -> float:
        return median(r["round_seconds"] for r in self.timed)

    @property
    def startup_seconds(self) -> float:
        """Wall time not spent in timed rounds: Ray, imports, model loads, round 1's warm-up."""
        return self.wall_seconds - sum(r["round_seconds"] for r in self.timed)


_RUNS: dict[str, SimRun] = {}


def simulate_run(config: Any) -> SimRun:
    """Run ``simulate`` into a temporary folder and time it.

    Runs are remembered per config within the process: when two benchmarks of the suite
    need the same federation (traffic and SecAgg+ cost), they share one run.
    """
    from simulations.run import require_completed, simulate

    key = config.model_dump_json()
    if key not in _RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            started = time.monotonic()
            summary = require_completed(simulate(config, out, report=False), "benchmark run")
            wall = time.monotonic() - started
            _RUNS[key] = SimRun(metrics(out), summary, wall)
    return _RUNS[key]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned text table; floats get 3 significant decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "—" if value is None else str(value)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def goal_text(value: float, goal: str) -> str:
    """'met' / 'missed' for a goal written as '<= 1.10' or '>= 0.90'."""
    op, bound = goal.split()
    ok = value <= float(bound) if op == "<=" else value >= float(bound)
    return "met" if ok else "missed"


def write(report: dict[str, Any], out: str | Path, text: str) -> Path:
    """Print the table and write the JSON report."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(text)
    print(f"written: {out}")
    return out

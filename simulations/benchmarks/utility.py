"""Utility on real text the project did not write: Debian's ``fortunes``, quotation → category.

Each quotation is labelled with the fortune file it comes from; five well-populated
files are used, the same number of quotations from each (a seeded sample of those of
20-300 characters), 20 % of each held out as the server's test set. Packaged MiniLM +
LoRA r = 8, the same examples seen and the same optimiser everywhere:

- centralised, non-private (one client holding every row);
- federated, non-private, 10 clients, IID and Dirichlet α = 0.5;
- federated, DP-SGD on every client at ε = 8 and ε = 3 (δ = 1e-5, IID).

Accuracy on the held-out set after the last round, and each ÷ the centralised one. Runs
go through the project's own ``simulate()`` with ``data.source`` a JSONL file. Needs the
``fortunes`` package (/usr/share/games/fortunes): installed here with apt-get when run
as root, otherwise the script stops and prints the command.

    .venv/bin/python -m simulations.benchmarks.utility [--quick] [--out FILE]
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from common.config import RunConfig, load_config
from common.errors import PrivatuneError
from simulations.benchmarks.common import ROOT, command, goal_text, parser, simulate_run, table
from simulations.benchmarks.common import write as write_report

FORTUNES = Path("/usr/share/games/fortunes")
INSTALL = "apt-get install -y fortunes"
CATEGORIES = ("computers", "definitions", "politics", "science", "songs-poems")
GOALS = {"fed-dirichlet": ">= 0.97", "dp-eps8": ">= 0.90"}


def ensure_fortunes() -> Path:
    """The fortunes folder; installs the Debian package when missing and run as root."""
    if FORTUNES.is_dir():
        return FORTUNES
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PrivatuneError(
            f"{FORTUNES} is missing: install Debian's fortunes package first: sudo {INSTALL}"
        )
    print(f"installing the fortunes package: {INSTALL}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(INSTALL.split(), env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(INSTALL.split(), env=env, check=True)
    return FORTUNES


def quotations(folder: Path, category: str) -> list[str]:
    """A fortune file's entries (separated by lines holding only %), whitespace collapsed."""
    text = (folder / category).read_text(encoding="utf-8", errors="replace")
    entries = (re.sub(r"\s+", " ", e).strip() for e in re.split(r"^%$", text, flags=re.M))
    return sorted({e for e in entries if 20 <= len(e) <= 300})


def write_split(folder: Path, out: Path, per_category: int, seed: int = 0) -> tuple[Path, Path]:
    """Balanced, deterministic train/test JSONL files (80/20 within each category)."""
    rng = random.Random(seed)
    train, test = [], []
    for category in CATEGORIES:
        chosen = rng.sample(quotations(folder, category), per_category)
        cut = int(0.8 * per_category)
        train += [{"text": t, "label": category} for t in chosen[:cut]]
        test += [{"text": t, "label": category} for t in chosen[cut:]]
    rng.shuffle(train)
    paths = (out / "train.jsonl", out / "test.jsonl")
    for path, rows in zip(paths, (train, test), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def config(
    train: Path, test: Path, *, model: str, rounds: int, clients: int, steps: int, extra: list[str]
) -> RunConfig:
    labels = "[" + ", ".join(f"'{c}'" for c in CATEGORIES) + "]"
    return load_config(
        ROOT / "examples" / "demo.toml",
        [
            f"model.path='{model}'",
            "model.max-length=64",
            f"data.source='{train}'",
            f"data.server-eval='{test}'",
            f"data.labels={labels}",
            "data.client-eval-fraction=0.0",
            "partition.method='iid'",
            f"federation.num-clients={clients}",
            f"federation.clients-per-round={clients}",
            "federation.min-clients=1",
            f"federation.rounds={rounds}",
            "training.optimizer='adam'",
            "training.lr=0.005",
            "training.batch-size=16",
            f"training.local-steps={steps}",
            "privacy.enabled=false",
            *extra,
        ],
    )


# name -> (clients, extra overrides); the centralised run trains one client 10x as long.
RUNS: dict[str, tuple[int, list[str]]] = {
    "central": (1, ["simulation.cpus-per-client=2", "training.threads=2"]),
    "fed-iid": (10, []),
    "fed-dirichlet": (10, ["partition.method='dirichlet'", "partition.alpha=0.5"]),
    "dp-eps8": (10, ["privacy.enabled=true", "privacy.target-epsilon=8", "privacy.delta=1e-5"]),
    "dp-eps3": (10, ["privacy.enabled=true", "privacy.target-epsilon=3", "privacy.delta=1e-5"]),
}
QUICK_RUNS = ("central", "dp-eps8")


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "utility").parse_args(argv)
    folder = ensure_fortunes()
    model = "default"
    if args.quick:
        from simulations.benchmarks.tiny import tiny_minilm

        model = tiny_minilm()
    per_category, rounds, steps = (40, 2, 1) if args.quick else (300, 5, 3)
    names = QUICK_RUNS if args.quick else tuple(RUNS)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        train, test = write_split(folder, Path(tmp), per_category)
        for name in names:
            clients, extra = RUNS[name]
            # Same examples per round: one client takes all ten clients' steps.
            local = steps * (10 // clients)
            cfg = config(
                train, test, model=model, rounds=rounds, clients=clients, steps=local, extra=extra
            )
            run = simulate_run(cfg)
            last = run.trained[-1]
            results[name] = {
                "accuracy": last["eval_accuracy"],
                "macro_f1": last["eval_macro_f1"],
                "untrained_accuracy": run.rows[0]["eval_accuracy"],
                "epsilon": run.summary.get("epsilon_max"),
                "seconds": run.wall_seconds,
            }
    central = results["central"]["accuracy"]
    for r in results.values():
        r["ratio_to_central"] = r["accuracy"] / central if central else float("nan")
    report = {
        "benchmark": "utility",
        "command": command("utility", args.quick),
        "model": "tiny" if args.quick else "all-MiniLM-L6-v2",
        "categories": CATEGORIES,
        "per_category": per_category,
        "rounds": rounds,
        "results": results,
        "goals": GOALS,
    }
    text = table(
        ["run", "accuracy", "macro-F1", "÷ central", "ε", "goal"],
        [
            (
                name,
                r["accuracy"],
                r["macro_f1"],
                r["ratio_to_central"],
                r["epsilon"],
                f"{GOALS[name]} ({goal_text(r['ratio_to_central'], GOALS[name])})"
                if name in GOALS
                else "",
            )
            for name, r in results.items()
        ],
    )
    write_report(
        report,
        args.out,
        f"untrained accuracy: {results['central']['untrained_accuracy']:.3f}\n{text}",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

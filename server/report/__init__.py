"""Turn a finished (or crashed) run's output folder into a static HTML report.

The report is what a person looks at after a run, often on a machine without the
training stack, so it only needs matplotlib and the files the run left behind:
``metrics.jsonl`` (one line per round), ``privacy_ledger.json``, ``config.resolved.toml``
and ``summary.json``. Everything except the metrics is optional (see ``inputs``).

Every file is written atomically (:mod:`common.atomic`), so a crash (or a second report
being written at the same time) never leaves a half-written PNG or HTML page. The HTML is
written last, so a ``report.html`` on disk always has its plots beside it.

Modules: ``inputs`` reads the folder, ``headline`` computes the top figures, ``plots``
draws, ``format`` and ``page`` render the HTML. Regenerate a report with
``python -m server.report OUTPUT_DIR``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from common.atomic import write_bytes_atomic
from server.report.inputs import load_run
from server.report.page import render_html
from server.report.plots import write_plots

__all__ = ["REPORT_FILE", "main", "write_report"]

REPORT_FILE = "report.html"


def write_report(output_dir: str | Path) -> Path:
    """Write the plots and ``report.html`` into ``output_dir``; returns the HTML path.

    Raises FileNotFoundError / ValueError when ``metrics.jsonl`` is missing or has no
    usable round, since there is then nothing to report.
    """
    out = Path(output_dir)
    data = load_run(out)
    plots = write_plots(out, data)
    title = f"privatune run report: {out.resolve().name}"
    path = out / REPORT_FILE
    write_bytes_atomic(path, render_html(data, plots, title).encode("utf-8"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.report DIR``: regenerate the report of a run folder."""
    parser = argparse.ArgumentParser(
        prog="python -m server.report",
        description="Regenerate report.html and its plots from a run's output folder.",
    )
    parser.add_argument("output_dir", type=Path, help="folder holding metrics.jsonl")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        path = write_report(args.output_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0

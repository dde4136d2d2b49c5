"""The output folder contract: config, per-round metrics, ledger, adapter, checkpoints.

Other tools and tests rely on these names. Every file is written so that a crash never
leaves a half-written file: JSON via a temporary file and ``os.replace``, metrics as
whole lines appended and flushed, adapters into a temporary folder renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.atomic import write_text_atomic

CONFIG_FILE = "config.resolved.toml"
METRICS_FILE = "metrics.jsonl"
LEDGER_FILE = "privacy_ledger.json"
SUMMARY_FILE = "summary.json"
FORGETTING_FILE = "forgetting.json"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
ERROR_LOG = "error.log"  # the traceback of an internal error (a bug), if the run hit one


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


class RunOutputs:
    """Paths and writers of one run's output folder."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_FILE

    def write_config(self, toml_text: str) -> None:
        write_text_atomic(self.dir / CONFIG_FILE, toml_text)

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(_jsonable(record), sort_keys=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_ledger(self, ledger: dict[str, Any]) -> None:
        write_json_atomic(self.dir / LEDGER_FILE, ledger)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.dir / SUMMARY_FILE, summary)

    def write_forgetting(self, forgetting: dict[str, Any]) -> None:
        write_json_atomic(self.dir / FORGETTING_FILE, forgetting)

    def save_adapter_dir(self, folder: Path, save: Callable[[Path], None]) -> None:
        """Write an adapter folder atomically (temporary folder, then rename)."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        os.chmod(tmp, 0o755)
        save(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)

    def checkpoint_dir(self, server_round: int) -> Path:
        return self.dir / CHECKPOINTS_DIR / f"round-{server_round}"

    def adapter_dir(self) -> Path:
        return self.dir / ADAPTER_DIR

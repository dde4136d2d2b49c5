"""The per-process cache of a parsed source: reused while the file is unchanged, never stale."""

from __future__ import annotations

import json
import os
from pathlib import Path

from common.config import validate
from common.data.pipeline import parsed_source, run_labels


def _write(path: Path, labels: list[str]) -> None:
    path.write_text(
        "".join(json.dumps({"text": f"row {i}", "label": x}) + "\n" for i, x in enumerate(labels))
    )


def test_parsed_once_then_reparsed_when_the_file_changes(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    _write(source, ["a", "b", "a", "b"])
    config = validate({"data": {"source": str(source)}})
    first = parsed_source(config)
    assert len(first[1]) == 4 and parsed_source(config) is first
    assert run_labels(config) == ["a", "b"]
    _write(source, ["a", "b", "c", "a", "b", "c"])
    os.utime(source, ns=(1, 1))  # a different mtime even on coarse clocks
    again = parsed_source(config)
    assert again is not first and len(again[1]) == 6
    assert run_labels(config) == ["a", "b", "c"]

"""Read a client's dataset file into plain records that remember where they came from.

Every later check (missing field, wrong label type, too long) must be able to say
*which* file and line is wrong, because the person fixing it is usually an operator on
a client node who cannot attach a debugger. So readers do no validation of the row
contents; they only turn each supported on-disk format into :class:`Record` objects
carrying the row, the file and the row's position, and they turn every way a file can
be unreadable into a :class:`~common.errors.DataError` that says how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DataError

__all__ = ["READERS", "SUFFIXES", "Record", "detect_format", "read_records"]


@dataclass(frozen=True)
class Record:
    """One row of a dataset file plus its location, so errors can point at it.

    ``line`` is the 1-based line in the file for line-oriented formats (JSONL, CSV) and
    the 0-based row index for columnar formats (Parquet, ``save_to_disk`` folders),
    which have no lines; ``unit`` says which of the two it is.
    """

    data: dict[str, Any]
    source: str
    line: int
    unit: str = "line"

    @property
    def where(self) -> str:
        """Human-readable location, e.g. ``train.jsonl:7`` or ``train.parquet row 6``."""
        if self.unit == "line":
            return f"{self.source}:{self.line}"
        return f"{self.source} row {self.line}"

    def error(self, message: str) -> DataError:
        """Build a DataError that names this record's file and line (or row)."""
        if self.unit == "line":
            return DataError(message, path=self.source, line=self.line)
        return DataError(f"row {self.line}: {message}", path=self.source)


Reader = Callable[[Path], list[Record]]

_UTF8_HINT = "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"


def _read_text(path: Path) -> str:
    """Read a whole text file as UTF-8, naming the offending line on a decoding error.

    Decoding the whole file at once (rather than line by line in text mode) lets us turn
    the byte offset of a bad byte into a line number.  ``utf-8-sig`` drops the byte
    order mark that Excel and Notepad like to write, which would otherwise end up in the
    first column name.
    """
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); {_UTF8_HINT}",
            path=str(path),
            line=line,
        ) from exc


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise DataError(
            "cannot be read (permission denied); give the user running privatune read "
            "access, e.g. `chmod a+r`",
            path=str(path),
        ) from exc
    except IsADirectoryError as exc:
        raise DataError(
            "is a directory, not a file; for a folder written by datasets.save_to_disk "
            'use data.format = "disk", otherwise point at the data file itself',
            path=str(path),
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot be read ({exc.strerror or exc})", path=str(path)) from exc


def _empty(path: Path, detail: str = "") -> DataError:
    return DataError(
        f"contains no rows{detail}; every client needs at least one example - check that "
        "the file was copied completely and that this is the right path",
        path=str(path),
    )


def read_jsonl(path: Path) -> list[Record]:
    """JSON Lines: one object per line, blank lines ignored.

    The file is split on ``\\n`` only (not ``str.splitlines``) because JSON strings may
    legally contain raw U+2028 and similar separators, which must not break a row.
    """
    text = _read_text(path)
    records: list[Record] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.rstrip("\r")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = "each line must hold exactly one JSON object (JSON Lines)"
            if number == 1 and line.lstrip().startswith("["):
                hint += "; this looks like a JSON array - write one object per line instead"
            raise DataError(
                f"malformed JSON ({exc.msg} at column {exc.colno}); {hint}",
                path=str(path),
                line=number,
            ) from exc
        if not isinstance(value, dict):
            raise DataError(
                f'expected a JSON object like {{"text": ..., "label": ...}}, '
                f"found a JSON {_json_type(value)}; each line must be one object",
                path=str(path),
                line=number,
            )
        records.append(Record(value, str(path), number))
    if not records:
        raise _empty(path)
    return records


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_csv(path: Path) -> list[Record]:
    """CSV with a header row; the first data row is line 2.

    Rows are built from ``csv.reader`` rather than ``csv.DictReader`` so that each row's
    *starting* line is known even when quoted fields span lines or blank lines are
    skipped, and so that rows with too many or too few cells are reported instead of
    silently padded with ``None``.
    """
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[Record] = []
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            if not cells or all(not c.strip() for c in cells):
                continue
            if header is None:
                header = _check_header(cells, path, reader.line_num)
                continue
            if len(cells) != len(header):
                raise DataError(
                    f"has {len(cells)} cells but the header has {len(header)} columns "
                    f"({', '.join(header)}); quote cells that contain commas or line breaks",
                    path=str(path),
                    line=start,
                )
            records.append(Record(dict(zip(header, cells, strict=True)), str(path), start))
    except csv.Error as exc:
        raise DataError(
            f"is not valid CSV ({exc}); check quoting near this line",
            path=str(path),
            line=reader.line_num,
        ) from exc
    if header is None:
        raise _empty(path, " (not even a header line)")
    if not records:
        raise _empty(path, " (only a header line)")
    return records


def _check_header(cells: list[str], path: Path, line: int) -> list[str]:
    header = [c.strip() for c in cells]
    seen: set[str] = set()
    for name in header:
        if not name:
            raise DataError(
                "the header has an empty column name; the first line must name every column",
                path=str(path),
                line=line,
            )
        if name in seen:
            raise DataError(
                f"the header names column {name!r} twice; column names must be unique",
                path=str(path),
                line=line,
            )
        seen.add(name)
    return header


def read_parquet(path: Path) -> list[Record]:
    """Apache Parquet, read with pyarrow; rows are located by 0-based row index.

    The bytes are read by us first so that permission and is-a-directory problems get
    the same messages as for text files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = _read_bytes(path)
    if not raw:
        raise _empty(path, " (the file is 0 bytes)")
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise DataError(
            f"is not a readable Parquet file ({exc}); re-export it, or set data.format "
            "to the file's real format",
            path=str(path),
        ) from exc
    rows = table.to_pylist()
    if not rows:
        raise _empty(path)
    return [Record(row, str(path), index, "row") for index, row in enumerate(rows)]


_DATASET_MARKERS = ("state.json", "dataset_dict.json")


def read_disk(path: Path) -> list[Record]:
    """A folder written by ``datasets.Dataset.save_to_disk`` (or a DatasetDict's).

    ``datasets`` is imported here only, because importing it is slow and every other
    format works without it.  A DatasetDict is reduced to its ``train`` split, since a
    client trains on exactly one split.
    """
    if not path.is_dir():
        raise DataError(
            'is not a directory; data.format = "disk" expects a folder written by '
            "datasets.save_to_disk",
            path=str(path),
        )
    if not any((path / marker).is_file() for marker in _DATASET_MARKERS):
        raise DataError(
            "is a directory but not a dataset saved with datasets.save_to_disk (it has no "
            "state.json or dataset_dict.json); point data.source at such a folder or at a "
            "JSONL/CSV/Parquet file",
            path=str(path),
        )
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except PermissionError as exc:
        raise DataError(
            "cannot be read (permission denied); give the user running privatune read "
            "access to the folder and its files",
            path=str(path),
        ) from exc
    except (OSError, ValueError) as exc:
        raise DataError(
            f"could not be loaded with datasets.load_from_disk ({exc}); re-save it with "
            "save_to_disk",
            path=str(path),
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            splits = ", ".join(sorted(loaded)) or "none"
            raise DataError(
                f"is a DatasetDict without a 'train' split (splits: {splits}); save the "
                "split to train on with save_to_disk, or rename it to 'train'",
                path=str(path),
            )
        loaded = loaded["train"]
    rows = loaded.to_list()
    if not rows:
        raise _empty(path)
    return [Record(row, str(path), index, "row") for index, row in enumerate(rows)]


READERS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
    "disk": read_disk,
}

#: File name endings recognised by ``fmt="auto"``; anything else must name its format.
SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: Path) -> str:
    """Pick a reader from the path: a directory is a saved dataset, files go by suffix."""
    if path.is_dir():
        return "disk"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(SUFFIXES))
        raise DataError(
            f"cannot tell the format from the suffix {path.suffix or '(none)'!r} (known: "
            f"{known}); rename the file or set data.format to one of "
            f"{', '.join(sorted(READERS))}",
            path=str(path),
        )
    return fmt


def read_records(path: str | Path, fmt: str = "auto") -> list[Record]:
    """Read every row of a dataset file or folder as :class:`Record` objects.

    ``fmt`` is ``"auto"`` or a key of :data:`READERS`.  Raises :class:`DataError` for a
    missing, empty or unreadable file and for an unknown format.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in READERS:
        valid = ", ".join(["auto", *sorted(READERS)])
        raise DataError(f"unknown data format {fmt!r}; valid formats: {valid}", path=str(path))
    if not path.exists():
        raise DataError(
            "does not exist; data files are read locally, so the path must exist on this "
            "node (copy the file here or fix data.source)",
            path=str(path),
        )
    reader = READERS[detect_format(path) if fmt == "auto" else fmt]
    return reader(path)

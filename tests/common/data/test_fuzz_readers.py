"""Fuzzing the data readers: any file gives rows or a DataError naming file (and line).

Random bytes must never escape as a UnicodeDecodeError, csv.Error or JSONDecodeError.
Random JSON Lines and CSV files written from known rows have an oracle: the reader
returns exactly those rows with their line numbers, or fails at the first bad line.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.data.formats import to_classification
from common.data.readers import read_records
from common.errors import DataError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _read(name: str, content: bytes, fmt: str = "auto") -> list | DataError:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            return read_records(path, fmt)
        except DataError as error:
            assert error.path == str(path), "the error must name the file"
            assert str(error).startswith(str(path)), str(error)
            return error


# Pieces that reach deeper into each parser: line ends, JSON and CSV syntax, a UTF-8
# byte order mark, Parquet's magic bytes.
chunks = st.sampled_from(
    [b"PAR1", b"\n", b"\r\n", b",", b'"', b"{", b"}", b"[", b"]", b":", b'"text"', b'"label"']
    + [b"\xef\xbb\xbf"]
)
fuzzy_bytes = st.lists(st.binary(max_size=8) | chunks, max_size=20).map(b"".join)


@FUZZ
@given(fuzzy_bytes, st.sampled_from(["d.jsonl", "d.csv", "d.parquet", "d.txt"]))
def test_random_bytes_give_rows_or_a_named_error(content: bytes, name: str) -> None:
    result = _read(name, content)
    if isinstance(result, list):
        assert result and all(isinstance(r.data, dict) for r in result)
        # Whatever was read goes on to row validation; that too fails only with DataError.
        try:
            to_classification(result)
        except DataError as error:
            assert error.path is not None or ":" in str(error)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)
jsonl_lines = st.lists(
    st.one_of(
        st.dictionaries(st.text(max_size=5), json_values, max_size=3).map(json.dumps),
        json_values.map(json.dumps),  # valid JSON, maybe not an object
        st.sampled_from(["", "   ", '{"text": ', "{'a': 1}", "[1,", "nul"]),  # blank or broken
    ),
    max_size=8,
)


@FUZZ
@given(jsonl_lines, st.sampled_from(["\n", "\r\n"]))
def test_jsonl_rows_or_the_first_bad_line(lines: list[str], newline: str) -> None:
    result = _read("d.jsonl", newline.join(lines).encode())
    expected_rows, first_bad = [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            first_bad = number
            break
        expected_rows.append((value, number))
    if first_bad is not None:
        assert isinstance(result, DataError) and result.line == first_bad, result
    elif not expected_rows:
        assert isinstance(result, DataError) and "contains no rows" in str(result)
    else:
        assert isinstance(result, list), result
        assert [(r.data, r.line) for r in result] == expected_rows


cells = st.text(max_size=10)


@FUZZ
@given(st.lists(st.tuples(cells, cells), max_size=6))
def test_csv_written_by_csv_module_reads_back_exactly(rows: list[tuple[str, str]]) -> None:
    """Any cells (commas, quotes, line breaks) survive; blank rows are skipped, not errors."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    result = _read("d.csv", buffer.getvalue().encode())
    kept = [{"text": t, "label": label} for t, label in rows if t.strip() or label.strip()]
    if not kept:
        assert isinstance(result, DataError) and "only a header" in str(result)
        return
    assert isinstance(result, list), result
    assert [r.data for r in result] == kept
    # Line numbers start after the header and only grow.
    lines = [r.line for r in result]
    assert lines[0] >= 2 and lines == sorted(set(lines))

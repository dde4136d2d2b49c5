"""Every reader yields the same rows with usable locations, and every bad file says why."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.data.readers import READERS, Record, read_records
from common.errors import DataError

ROWS = [
    {"text": "card charged twice", "label": "billing"},
    {"text": "app crashes, error 502", "label": "technical"},
    {"text": "parcel never arrived", "label": "shipping"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path) -> Path:
    lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _parquet(path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


def _disk(path: Path) -> Path:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    return path


def test_registry_names() -> None:
    assert sorted(READERS) == ["csv", "disk", "jsonl", "parquet"]


@pytest.mark.parametrize(
    ("make", "name", "first_line", "unit"),
    [
        (lambda p: _jsonl(p, ROWS), "d.jsonl", 1, "line"),
        (_csv, "d.csv", 2, "line"),
        (_parquet, "d.parquet", 0, "row"),
        (_disk, "saved", 0, "row"),
    ],
    ids=["jsonl", "csv", "parquet", "disk"],
)
def test_every_reader_yields_the_same_rows(
    tmp_path: Path, make, name: str, first_line: int, unit: str
) -> None:
    path = make(tmp_path / name)
    records = read_records(path)  # auto-detected
    assert [r.data for r in records] == ROWS
    assert [r.line for r in records] == [first_line, first_line + 1, first_line + 2]
    assert {r.unit for r in records} == {unit}
    assert all(r.source == str(path) for r in records)


def test_explicit_format_matches_auto(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "rows.txt", ROWS)
    assert [r.data for r in read_records(path, "jsonl")] == ROWS


def test_jsonl_skips_blank_lines_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\r\n', encoding="utf-8")
    records = read_records(path)
    assert [(r.data["a"], r.line) for r in records] == [(1, 1), (2, 4)]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "oops", "label": }\n')
    with pytest.raises(DataError) as info:
        read_records(path)
    message = str(info.value)
    assert f"{path}:2:" in message
    assert "malformed JSON" in message and "one JSON object" in message
    assert info.value.line == 2 and info.value.path == str(path)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"list\.jsonl:2: expected a JSON object.*array"):
        read_records(path)


def test_json_array_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text('[\n{"a": 1}\n]\n')
    with pytest.raises(DataError, match="JSON array"):
        read_records(path)


def test_csv_multiline_cell_keeps_start_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('text,label\n"two\nlines",a\n\nplain,b\n', encoding="utf-8")
    records = read_records(path)
    assert [(r.data["text"], r.line) for r in records] == [("two\nlines", 2), ("plain", 5)]


def test_csv_strips_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\nhi,a\n".encode("utf-8-sig"))
    assert read_records(path)[0].data == {"text": "hi", "label": "a"}


def test_csv_wrong_cell_count_names_line(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    path.write_text("text,label\nfine,a\ntoo,many,cells\n")
    with pytest.raises(DataError, match=r"cells\.csv:3: has 3 cells but the header has 2"):
        read_records(path)


def test_csv_duplicate_header(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("text,text\na,b\n")
    with pytest.raises(DataError, match=r"dup\.csv:1: .*'text' twice"):
        read_records(path)


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("empty.jsonl", "", "contains no rows"),
        ("blank.jsonl", "\n  \n", "contains no rows"),
        ("empty.csv", "", "not even a header"),
        ("header.csv", "text,label\n", "only a header"),
        ("empty.parquet", "", "0 bytes"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, content: str, detail: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        read_records(path)
    assert str(path) in str(info.value) and detail in str(info.value)


def test_empty_parquet_table(tmp_path: Path) -> None:
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match="contains no rows"):
        read_records(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as info:
        read_records(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value) and "this node" in str(info.value)


def test_unknown_format_lists_valid_ones(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(
        DataError, match="unknown data format 'xml'.*auto, csv, disk, jsonl, parquet"
    ):
        read_records(path, "xml")


def test_unknown_suffix_asks_for_format(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"'\.xlsx'.*data\.format"):
        read_records(path)


def test_not_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: is not valid UTF-8"):
        read_records(path)


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_records(path)


def test_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not a dataset saved with datasets.save_to_disk"):
        read_records(folder)


def test_directory_given_as_jsonl(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        read_records(tmp_path, "jsonl")


def test_dataset_dict_uses_train_or_lists_splits(tmp_path: Path) -> None:
    import datasets

    with_train = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    )
    with_train.save_to_disk(str(tmp_path / "dd"))
    assert [r.data for r in read_records(tmp_path / "dd")] == ROWS

    without = datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)})
    without.save_to_disk(str(tmp_path / "nodd"))
    with pytest.raises(DataError, match="without a 'train' split.*validation"):
        read_records(tmp_path / "nodd")


def test_record_error_formats_lines_and_rows() -> None:
    assert str(Record({}, "f.jsonl", 3).error("bad")) == "f.jsonl:3: bad"
    assert str(Record({}, "f.parquet", 3, "row").error("bad")) == "f.parquet: row 3: bad"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "secret.jsonl", ROWS)
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied"):
            read_records(path)
    finally:
        path.chmod(0o600)

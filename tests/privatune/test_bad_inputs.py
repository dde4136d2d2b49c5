"""The bad-input table: config, model and data mistakes, each through `privatune simulate`.

Every case runs the real command in-process and asserts three things: it exits with
status 2 (a clean PrivatuneError, printed without a traceback), the message names the
problem (key, file, line) and how to fix it, and the output folder was never created,
so no half-written run is left behind. Checks of single functions (readers, formats,
config parsing) live in test_config.py and data/; this table is about what a user sees.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.config import load_config
from common.errors import ModelError
from privatune.cli import main

ROWS = [
    ("card charged twice", "billing"),
    ("parcel never arrived", "shipping"),
    ("app crashes on login", "technical"),
    ("refund not received", "billing"),
    ("package delivered late", "shipping"),
    ("error when i log in", "technical"),
]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD_JSONL = _jsonl([{"text": t, "label": label} for t, label in ROWS])
GOOD_CSV = "text,label\n" + "".join(f"{t},{label}\n" for t, label in ROWS)

# A small federation on the tiny model, reading data.source from the case's folder.
DATA_BASE = [
    "data.server-eval=''",
    "partition.method='iid'",
    "federation.num-clients=2",
    "federation.clients-per-round=2",
    "federation.min-clients=1",
]


@dataclass(frozen=True)
class Case:
    """One bad input: files to write, command-line arguments, and what the error says.

    ``{dir}`` in files' arguments is the case's folder, ``{model}`` the tiny model.
    ``model`` can break a copy of the tiny model (it gets the copy's folder).
    """

    args: list[str]
    expect: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    model: Callable[[Path], None] | None = None


def _data(source: str, *extra: str) -> list[str]:
    return ["--set", f"data.source='{{dir}}/{source}'", *_sets(*DATA_BASE, *extra)]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _write_config_json(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "config.json").write_text(text)


CONFIG_CASES = {
    "config-value-out-of-range": Case(
        _sets("privacy.delta=1.5"), ["privacy.delta: Input should be less than 1"]
    ),
    "config-nan": Case(_sets("training.lr=nan"), ["training.lr: Input should be a finite number"]),
    "config-infinite-epsilon": Case(
        _sets("privacy.target-epsilon=inf"),
        ["privacy.target-epsilon: Input should be a finite number"],
    ),
    "config-unknown-key-did-you-mean": Case(
        ["--config", "{dir}/c.toml"],
        ["federation.round: unknown key; did you mean federation.rounds?"],
        {"c.toml": "[federation]\nround = 3\n"},
    ),
    "config-unknown-section-did-you-mean": Case(
        ["--config", "{dir}/c.toml"],
        ["trainng: unknown key; did you mean training?"],
        {"c.toml": "[trainng]\nlr = 0.1\n"},
    ),
    "config-wrong-type-int": Case(
        ["--config", "{dir}/c.toml"],
        ["lora.r: Input should be a valid integer", "'eight'"],
        {"c.toml": '[lora]\nr = "eight"\n'},
    ),
    "config-wrong-type-list": Case(
        ["--config", "{dir}/c.toml"],
        ["lora.target-modules: Input should be a valid list", "'query'"],
        {"c.toml": '[lora]\ntarget-modules = "query"\n'},
    ),
    "config-section-is-a-value": Case(
        ["--config", "{dir}/c.toml"],
        ["privacy: Input should be a valid dictionary"],
        {"c.toml": "privacy = 3\n"},
    ),
    "config-malformed-toml-line": Case(
        ["--config", "{dir}/c.toml"],
        ["c.toml:4: not valid TOML", "Expected ']'"],
        {"c.toml": "[training]\nlr = 0.1\n\n[federation\nrounds = 2\n"},
    ),
    "config-not-utf8": Case(
        ["--config", "{dir}/c.toml"],
        ["c.toml:2: not UTF-8 (byte 0xe9)", "must be UTF-8"],
        {"c.toml": b"[data]\nsource = 'caf\xe9.jsonl'\n"},
    ),
    "config-missing-file": Case(["--config", "{dir}/none.toml"], ["none.toml does not exist"]),
    "config-cross-field-min-clients": Case(
        _sets("federation.min-clients=4", "federation.clients-per-round=3"),
        ["federation.min-clients (4) exceeds federation.clients-per-round (3); lower it"],
    ),
    "config-cross-field-task": Case(
        _sets("model.task='causal-lm'"),
        ['model.path "default"', "set model.path to a causal LM folder"],
    ),
    "config-two-noise-sources": Case(
        ["--config", "{dir}/c.toml"],
        ["set either privacy.noise-multiplier or privacy.target-epsilon, not both"],
        {"c.toml": "[privacy]\nnoise-multiplier = 1.0\ntarget-epsilon = 3.0\n"},
    ),
    "config-unknown-choice": Case(
        _sets("data.too-long='chop'"), ["data.too-long", "'truncate', 'drop' or 'reject'", "'chop'"]
    ),
    "config-duplicate-labels": Case(
        _sets("data.labels=['a', 'b', 'a']"),
        ["data.labels: labels ['a'] appear more than once; list each class once"],
    ),
    "set-without-equals": Case(
        _sets("training.lr"), ["--set 'training.lr': expected section.key=value"]
    ),
    "set-empty-key-part": Case(
        _sets("training..lr=1"), ["--set 'training..lr=1'", "has an empty part"]
    ),
    "set-value-is-not-one-value": Case(
        _sets("training.lr=0.1\nx = 2"), ["training.lr: Input should be a valid number"]
    ),
    "config-max-length-beyond-model": Case(
        _sets("model.path='{model}'", "model.max-length=1000"),
        ["model.max-length: 1000 exceeds the 128 positions", "set it to at most 128"],
    ),
}

MODEL_CASES = {
    "model-missing-directory": Case(
        _sets("model.path='{dir}/no-such-model'"),
        ["model.path:", "no-such-model is not a directory", "save_pretrained"],
    ),
    "model-folder-not-a-model": Case(
        _sets("model.path='{dir}'"),
        ["model.path:", "has no config.json", "save_pretrained"],
        {"notes.txt": "not a model"},
    ),
    "model-config-json-malformed": Case(
        _sets("model.path='{model}'"),
        ["model.path:", "config.json:1 is not valid JSON", "re-save the model"],
        model=_write_config_json("{not json"),
    ),
    "model-config-json-not-an-object": Case(
        _sets("model.path='{model}'"),
        ["config.json must hold a JSON object"],
        model=_write_config_json("[1, 2]"),
    ),
    "model-config-json-no-model-type": Case(
        _sets("model.path='{model}'"),
        ["config.json has no model_type", "not a transformers model folder"],
        model=_write_config_json("{}"),
    ),
    "model-config-json-not-utf8": Case(
        _sets("model.path='{model}'"),
        ["config.json is not UTF-8"],
        model=lambda folder: (folder / "config.json").write_bytes(b'{"a": "\xff"}'),
    ),
}

LONG = "card charged twice " * 10  # 30 words: longer than max-length 8
DATA_CASES = {
    "data-empty-file": Case(_data("d.jsonl"), ["d.jsonl: contains no rows"], {"d.jsonl": ""}),
    "data-malformed-jsonl-line": Case(
        _data("d.jsonl"),
        ["d.jsonl:3: malformed JSON", "one JSON object"],
        {"d.jsonl": GOOD_JSONL[:80].rsplit("\n", 1)[0] + '\n\n{"text": "x", label: 1}\n'},
    ),
    "data-jsonl-line-not-an-object": Case(
        _data("d.jsonl"),
        ["d.jsonl:2: expected a JSON object", "found a JSON string"],
        {"d.jsonl": '{"text": "a", "label": "b"}\n"just text"\n'},
    ),
    "data-csv-missing-text-field": Case(
        _data("d.csv"),
        ["d.csv:2: missing field 'text'", "fields found: body, label", "data.text-field"],
        {"d.csv": GOOD_CSV.replace("text,label", "body,label")},
    ),
    "data-csv-missing-label-field": Case(
        _data("d.csv"),
        ["d.csv:2: missing field 'label'", "data.label-field"],
        {"d.csv": GOOD_CSV.replace("text,label", "text,category")},
    ),
    "data-custom-field-absent": Case(
        _data("d.csv", "data.text-field='body'"),
        ["d.csv:2: missing field 'body'", "fields found: label, text"],
        {"d.csv": GOOD_CSV},
    ),
    "data-float-label": Case(
        _data("d.jsonl"),
        ["d.jsonl:3: field 'label' must be a string or an integer", "found float (1.5)"],
        {"d.jsonl": GOOD_JSONL.splitlines(keepends=True)[0] * 2 + '{"text": "a", "label": 1.5}\n'},
    ),
    "data-bool-label": Case(
        _data("d.jsonl"),
        ["d.jsonl:1: field 'label' must be a string or an integer", "found bool"],
        {"d.jsonl": '{"text": "a", "label": true}\n'},
    ),
    "data-unknown-label": Case(
        _data("d.jsonl", "data.labels=['billing', 'shipping', 'technical']"),
        ["labels ['refunds'] (first at", "d.jsonl:7)", "add them to data.labels"],
        {"d.jsonl": GOOD_JSONL + '{"text": "money back", "label": "refunds"}\n'},
    ),
    "data-single-class": Case(
        _data("d.jsonl"),
        ["d.jsonl: holds a single class label", "at least two"],
        {"d.jsonl": _jsonl([{"text": t, "label": "billing"} for t, _ in ROWS])},
    ),
    "data-too-long-reject-names-row": Case(
        _data("d.jsonl", "model.max-length=8", "data.too-long='reject'"),
        ["d.jsonl:4: this row is 32 tokens, longer than model.max-length = 8", "1 row(s)"],
        {"d.jsonl": GOOD_JSONL.replace("refund not received", LONG)},
    ),
    "data-missing-file": Case(
        _data("nope.jsonl"), ["nope.jsonl: does not exist", "fix data.source"]
    ),
    "data-not-utf8": Case(
        _data("d.jsonl"),
        ["d.jsonl:2: is not valid UTF-8 (byte 0xe9)", "iconv"],
        {"d.jsonl": b'{"text": "a", "label": "b"}\n{"text": "caf\xe9", "label": "b"}\n'},
    ),
    "data-directory-as-jsonl": Case(
        _data("sub", "data.format='jsonl'"),
        ["sub: is a directory, not a file"],
        {"sub/x.txt": "x"},
    ),
    "data-unknown-suffix": Case(
        _data("d.txt"),
        ["cannot tell the format from the suffix '.txt'", "data.format"],
        {"d.txt": GOOD_JSONL},
    ),
    "data-unknown-format": Case(
        _data("d.jsonl", "data.format='xml'"),
        ["data.format: Input should be 'auto', 'jsonl', 'csv', 'parquet' or 'disk'"],
        {"d.jsonl": GOOD_JSONL},
    ),
    "data-wrong-format-named": Case(
        _data("d.jsonl", "data.format='parquet'"),
        ["d.jsonl: is not a readable Parquet file", "set data.format to the file's real format"],
        {"d.jsonl": GOOD_JSONL},
    ),
    "data-natural-partition-column-missing": Case(
        _data("d.jsonl", "partition.method='natural'"),
        ["d.jsonl:1: partition.method = natural needs the column 'org' in every row"],
        {"d.jsonl": GOOD_JSONL},
    ),
    "data-server-eval-malformed": Case(
        _data("d.jsonl", "data.server-eval='{dir}/eval.csv'"),
        ["eval.csv:3: has 3 cells but the header has 2 columns"],
        {"d.jsonl": GOOD_JSONL, "eval.csv": "text,label\nok,billing\nnot,ok,billing\n"},
    ),
}

TABLE = {**CONFIG_CASES, **MODEL_CASES, **DATA_CASES}


def _fill(text: str, folder: Path, model: Path) -> str:
    return text.replace("{dir}", str(folder)).replace("{model}", str(model))


@pytest.mark.parametrize("case", list(TABLE.values()), ids=list(TABLE))
def test_bad_input_is_named_and_leaves_no_output(
    case: Case, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    model = tiny_bert
    if case.model is not None:
        model = tmp_path / "model"
        shutil.copytree(tiny_bert, model)
        case.model(model)
    out = tmp_path / "out"
    args = [_fill(a, folder, model) for a in case.args]
    data_case = any("data.source" in a for a in args) and not any("model.path" in a for a in args)
    if data_case:
        args += ["--set", f"model.path='{model}'"]

    code = main(["simulate", *args, "--output", str(out)])

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("privatune: error: "), err
    assert "Traceback" not in err
    for fragment in case.expect:
        assert _fill(fragment, folder, model) in err, f"{fragment!r} not in {err!r}"
    assert not out.exists(), "a failed run must not leave an output folder"


def test_table_size() -> None:
    """The issue asks for at least 30 bad inputs across config, model and data."""
    assert len(TABLE) >= 30
    assert min(len(CONFIG_CASES), len(MODEL_CASES), len(DATA_CASES)) >= 5


# -- too-long rows that are kept: counted, not fatal -------------------------------------


@pytest.mark.parametrize(("policy", "kept"), [("truncate", 8), ("drop", 6)])
def test_truncate_and_drop_count_long_rows(
    policy: str, kept: int, tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from common.data.pipeline import client_data
    from common.models import load_tokenizer
    from common.preflight import check_inputs

    rows = [{"text": t, "label": label} for t, label in ROWS]
    rows += [{"text": LONG, "label": "billing"}, {"text": LONG, "label": "shipping"}]
    path = tmp_path / "d.jsonl"
    path.write_text(_jsonl(rows))
    config = load_config(
        None,
        [
            f"model.path='{tiny_bert}'",
            f"data.source='{path}'",
            "model.max-length=8",
            f"data.too-long='{policy}'",
            "data.client-eval-fraction=0",
            *DATA_BASE,
            "federation.num-clients=1",
            "federation.clients-per-round=1",
        ],
    )
    with caplog.at_level("WARNING", logger="privatune"):
        report = check_inputs(config)
    assert (report.rows, report.too_long) == (8, 2)
    assert f"2 of 8 rows are longer than model.max-length = 8 tokens and will be {policy}" in (
        caplog.text.replace("truncated", "truncate").replace("dropped", "drop")
    )
    data = client_data(config, load_tokenizer(str(tiny_bert)), partition_id=0)
    assert (len(data.train), data.train.num_too_long) == (kept, 2)


# -- model folders that pass the folder check but cannot be loaded ------------------------


@pytest.mark.parametrize(
    ("breakage", "expect"),
    [
        (lambda f: [p.unlink() for p in f.glob("*.safetensors")], "no file named model.safet"),
        (lambda f: [p.write_bytes(b"garbage") for p in f.glob("*.safetensors")], "header"),
    ],
    ids=["weights-missing", "weights-corrupt"],
)
def test_unloadable_weights_are_a_model_error(
    breakage: Callable[[Path], None], expect: str, tiny_bert: Path, tmp_path: Path
) -> None:
    """Before: corrupt safetensors escaped as safetensors' own SafetensorError."""
    from common.models import load_base_model

    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    breakage(folder)
    with pytest.raises(ModelError) as info:
        load_base_model(str(folder), "sequence-classification", num_labels=3)
    assert f"model.path: cannot load a sequence-classification model from {folder}" in str(
        info.value
    )
    assert expect in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_config_json(tiny_bert: Path, tmp_path: Path) -> None:
    from common.models import resolve_model_dir

    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    (folder / "config.json").chmod(0)
    try:
        with pytest.raises(ModelError, match="cannot read .*config.json.*read access"):
            resolve_model_dir(str(folder))
    finally:
        (folder / "config.json").chmod(0o600)


def test_bad_input_with_overwrite_keeps_the_previous_run(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--overwrite replaces a run only once the new inputs are known to be good."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"round": 0}\n')
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"text": "a", "label": }\n')
    code = main(
        [
            "simulate",
            *_sets(f"model.path='{tiny_bert}'", f"data.source='{bad}'", *DATA_BASE),
            "--output",
            str(out),
            "--overwrite",
        ]
    )
    assert code == 2 and "d.jsonl:1: malformed JSON" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == '{"round": 0}\n'

"""Multi-task mixtures: shares by weight, no repeated row, determinism, errors naming keys."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from common.config import load_config
from common.data.demo import write_jsonl
from common.data.general import make_general_instruction
from common.data.mixture import allocation, mixture_records
from common.data.pipeline import client_data, source_records
from common.errors import ConfigError, DataError


def _config(*extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None, ["model.path='/nowhere'", "model.task='causal-lm'", "data.demo-examples=100", *extra]
    )


def _mixture(*components: tuple[str, float]) -> str:
    items = ", ".join(f"{{source='{s}', weight={w}}}" for s, w in components)
    return f"data.mixture=[{items}]"


@pytest.fixture
def general_file(tmp_path: Path) -> Path:
    return write_jsonl(make_general_instruction(60, seed=5), tmp_path / "general.jsonl")


def test_allocation_by_hand() -> None:
    """0.7/0.3 of 100 and 60 rows: the pool is min(100/0.7, 60/0.3) = 142 rows, 99 + 43."""
    assert allocation([100, 60], [0.7, 0.3], None) == [99, 43]
    assert allocation([100, 60], [7, 3], None) == [99, 43]  # weights are relative
    assert allocation([100, 60], [1, 1], None) == [60, 60]  # the scarcer one binds
    assert allocation([100, 60], [1, 1], 10) == [5, 5]
    assert allocation([10, 10, 10], [1, 1, 1], 10) == [4, 3, 3]  # largest remainder, stable


def test_mixture_pool_has_the_weighted_shares_and_no_repeats(general_file: Path) -> None:
    config = _config(_mixture(("demo", 0.7), (str(general_file), 0.3)))
    pool = mixture_records(config)
    by_source = Counter(r.source for r in pool)
    assert by_source == {"demo": 99, str(general_file): 43}
    assert len({(r.source, r.line) for r in pool}) == len(pool), "a row was repeated"
    assert [(r.source, r.line) for r in mixture_records(config)] == [
        (r.source, r.line) for r in pool
    ], "not deterministic"
    other_seed = mixture_records(
        config.model_copy(update={"training": config.training.model_copy(update={"seed": 1})})
    )
    assert [(r.source, r.line) for r in other_seed] != [(r.source, r.line) for r in pool]
    # The pool is what the simulation partitions: source_records routes to it.
    assert [(r.source, r.line) for r in source_records(config)] == [
        (r.source, r.line) for r in pool
    ]


def test_each_client_gets_a_deterministic_share_of_the_mixture(
    tiny_llama: Path, general_file: Path
) -> None:
    from common.models import load_tokenizer

    config = load_config(
        None,
        [
            f"model.path='{tiny_llama}'",
            "model.task='causal-lm'",
            "data.demo-examples=100",
            _mixture(("demo", 0.5), ("demo-general", 0.5)),
            "partition.method='iid'",
            "federation.num-clients=2",
            "federation.clients-per-round=2",
        ],
    )
    tok = load_tokenizer(str(tiny_llama))
    parts = [client_data(config, tok, partition_id=i) for i in range(2)]
    total = sum(len(p.train) + len(p.eval or ()) for p in parts)
    assert total == 200  # 100 demo + 100 general rows, split between the two clients
    again = client_data(config, tok, partition_id=1)
    assert again.train.dataset.tensors[0].equal(parts[1].train.dataset.tensors[0])


def test_too_many_rows_for_a_weight_names_the_component(general_file: Path) -> None:
    config = _config(_mixture(("demo", 0.5), (str(general_file), 0.5)), "data.mixture-examples=150")
    with pytest.raises(DataError, match=r"data\.mixture\[1\]: its weight asks for 75 .* holds 60"):
        mixture_records(config)


def test_missing_file_names_the_key(tmp_path: Path) -> None:
    config = _config(_mixture(("demo", 1.0), (str(tmp_path / "nope.jsonl"), 1.0)))
    with pytest.raises(
        DataError, match=r"data\.mixture\[1\]\.source: .*nope\.jsonl.*does not exist"
    ):
        mixture_records(config)


def test_classification_rows_are_not_a_compatible_component(tmp_path: Path) -> None:
    """A file of (text, label) rows in an instruction mixture fails on its first line."""
    bad = tmp_path / "labels.jsonl"
    bad.write_text(json.dumps({"text": "refund please", "label": "billing"}) + "\n")
    config = _config(_mixture(("demo", 1.0), (str(bad), 1.0)))
    with pytest.raises(
        DataError, match=r"data\.mixture\[1\]\.source: .*labels\.jsonl:1: is not an instruction row"
    ):
        mixture_records(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([_mixture(("demo", 0.0))], r"data\.mixture\[0\]\.weight: Input should be greater than 0"),
        ([_mixture(("demo", -1.0))], r"data\.mixture\[0\]\.weight"),
        (["data.mixture=[{source='demo'}]"], r"data\.mixture\[0\]\.weight: Field required"),
        (
            ["data.mixture=[{source='demo', weight=1, wieght=2}]"],
            r"data\.mixture\[0\]\.wieght: unknown key; did you mean data\.mixture\[\]\.weight",
        ),
        (
            ["data.source='x.jsonl'", _mixture(("demo", 1.0))],
            r"data\.source = 'x\.jsonl' is not used when data\.mixture is set",
        ),
    ],
)
def test_mixture_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(*overrides)


def test_mixture_and_general_eval_are_for_causal_lms() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [_mixture(("demo", 1.0)), "data.general-eval='demo'"])
    text = str(err.value)
    assert "data.general-eval: the forgetting check needs model.task = causal-lm" in text
    assert "data.mixture: mixtures of instruction datasets need model.task = causal-lm" in text


def test_resolved_config_with_a_mixture_round_trips(tmp_path: Path, general_file: Path) -> None:
    config = _config(_mixture(("demo", 0.7), (str(general_file), 0.3)), "data.general-eval='demo'")
    path = tmp_path / "resolved.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert "[[data.mixture]]" in config.to_toml()
    # A deployed run carries the config as Flower's run_config `set` string.
    from common.config import from_run_config

    assert from_run_config({"set": config.to_set_string()}) == config


def test_simulate_checks_the_general_eval_file_before_starting(tmp_path: Path) -> None:
    from simulations.run import simulate

    config = _config(f"data.general-eval='{tmp_path / 'missing.jsonl'}'")
    with pytest.raises(DataError, match=r"data\.general-eval: .*missing\.jsonl.*does not exist"):
        simulate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()

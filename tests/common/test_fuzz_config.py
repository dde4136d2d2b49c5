"""Fuzzing the config loader: any input gives a RunConfig or a ConfigError naming a key.

Random nested dicts (TOML files as parsed), random ``--set`` strings and random bytes in
a TOML file go through the three entry points. Nothing else may escape: an
AttributeError or a UnicodeDecodeError would reach the user as a traceback. Examples are
derandomised so CI sees the same ones every run.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config import (
    EXCLUSIVE_KEYS,
    RunConfig,
    _known_keys,
    from_run_config,
    load_config,
    validate,
)
from common.errors import ConfigError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

KNOWN = _known_keys(RunConfig)
SECTIONS = sorted({k.split(".")[0] for k in KNOWN})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["default", "demo", "iid", "natural", "lora", "ffa", "adam", "hooks", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
leaf_names = st.sampled_from(sorted({k.rsplit(".", 1)[-1] for k in KNOWN})) | st.text(max_size=10)
sections = st.dictionaries(leaf_names, values, max_size=4)
trees = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=8), sections | values, max_size=4
)

# Where a problem can point: a key (dotted), the file (path or path:line), --set or set.
# A key with blanks or odd characters is quoted.
PROBLEM = re.compile(r"^(\(top level\)|--set |set: |config file |\S+(:\d+)?: |['\"].*['\"]: )")


def _check_problems(error: ConfigError) -> None:
    assert error.problems, "a ConfigError must list at least one problem"
    for problem in error.problems:
        assert PROBLEM.match(problem), f"problem does not start by naming a key: {problem!r}"


@FUZZ
@given(trees)
def test_random_trees_validate_or_name_a_key(tree: dict) -> None:
    try:
        config = validate(tree)
    except ConfigError as error:
        _check_problems(error)
    else:
        assert isinstance(config, RunConfig)


override_keys = st.sampled_from(KNOWN) | st.text(max_size=20)
override_values = st.sampled_from(
    ["1", "0", "-1", "1e-3", "nan", "inf", "true", "'x'", "[1, 2]", "['a', 'a']", "{a = 1}", ""]
) | st.text(max_size=15)
overrides = st.builds(lambda k, v: f"{k}={v}", override_keys, override_values) | st.text(
    max_size=25
)


@FUZZ
@given(st.lists(overrides, max_size=4))
def test_random_set_strings_load_or_name_a_key(items: list[str]) -> None:
    try:
        config = load_config(None, items)
    except ConfigError as error:
        _check_problems(error)
    else:
        assert isinstance(config, RunConfig)
        # Whatever was accepted must survive the trip through a file and back.
        assert validate(config.to_toml_dict()) == config


@FUZZ
@given(
    st.binary(max_size=80) | st.text(max_size=80).map(str.encode),
    st.lists(overrides, max_size=2),
)
def test_random_toml_files_load_or_name_file_and_line(content: bytes, items: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes(content)
        try:
            config = load_config(path, items)
        except ConfigError as error:
            _check_problems(error)
        else:
            assert isinstance(config, RunConfig)


@FUZZ
@given(st.dictionaries(override_keys | st.just("set"), override_values | values, max_size=4))
def test_random_flower_run_configs(run_config: dict) -> None:
    """Flower's run_config: flat dotted keys plus the special `set` string."""
    run_config.pop("config-file", None)
    try:
        config = from_run_config(run_config)
    except ConfigError as error:
        _check_problems(error)
    else:
        assert isinstance(config, RunConfig)


def _toml_safe(value: object) -> bool:
    import tomli_w

    try:
        tomli_w.dumps({"v": value})
    except (TypeError, ValueError):
        return False
    return True


@FUZZ
@given(
    trees,
    st.lists(
        overrides
        | st.sampled_from(KNOWN).map(lambda k: f"{k}=1")
        # --set of one of these drops the other from the file: the file's section may be
        # anything, even a plain value.
        | st.sampled_from(sorted(EXCLUSIVE_KEYS)).map(lambda k: f"{k}=2"),
        max_size=3,
    ),
)
def test_random_files_with_overrides(tree: dict, items: list[str]) -> None:
    """A parsed file merged with --set: sections that are values must not break the merge."""
    import tomli_w
    from hypothesis import assume

    assume(_toml_safe(tree))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_text(tomli_w.dumps(tree), encoding="utf-8")
        try:
            config = load_config(path, items)
        except ConfigError as error:
            _check_problems(error)
        else:
            assert isinstance(config, RunConfig)

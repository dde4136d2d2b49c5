"""Config: one validated model from TOML, --set and Flower's run_config; all errors at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import RunConfig, from_run_config, load_config, parse_override
from common.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path: Path) -> None:
    config = RunConfig()
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config


def test_toml_is_kebab_case_and_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[training]\nlr = 0.2\nlocal-steps = 7\n[lora]\nr = 4\n")
    config = load_config(path, ["training.lr=1e-3", "lora.target-modules=['query']"])
    assert config.training.lr == pytest.approx(1e-3)
    assert config.training.local_steps == 7
    assert config.lora.r == 4
    assert config.lora.target_modules == ["query"]


def test_all_problems_reported_at_once_with_keys_and_hints() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            None,
            [
                "training.lrr=3",
                "federation.rounds=0",
                "privacy.noise-multipler=1",
                "model.task=translation",
                "bogus.key=1",
            ],
        )
    problems = info.value.problems
    assert len(problems) == 5
    text = str(info.value)
    assert "training.lrr: unknown key; did you mean training.lr?" in text
    assert "federation.rounds: Input should be greater than 0" in text
    assert "did you mean privacy.noise-multiplier?" in text
    assert "model.task" in text and "translation" in text
    assert "bogus: unknown key; valid keys here:" in text


def test_cross_field_checks_name_both_keys() -> None:
    with pytest.raises(ConfigError, match="clients-per-round .* exceeds federation.num-clients"):
        load_config(None, ["federation.num-clients=2", "federation.clients-per-round=3"])


def test_noise_sources_are_exclusive_when_both_set_explicitly() -> None:
    with pytest.raises(ConfigError, match="either privacy.noise-multiplier or privacy.target"):
        load_config(None, ["privacy.noise-multiplier=1.0", "privacy.target-epsilon=3"])
    # A fixed sigma alone replaces the default target.
    config = load_config(None, ["privacy.noise-multiplier=1.0"])
    assert config.privacy.target_epsilon is None
    assert config.privacy.noise_multiplier == 1.0


def test_bad_toml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[training\nlr = 1\n")
    with pytest.raises(ConfigError, match="broken.toml:1: not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_override_values_are_toml_typed() -> None:
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a.b=1e-3") == ("a.b", 1e-3)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=hello") == ("a.b", "hello")
    assert parse_override("a.snake_key=x") == ("a.snake-key", "x")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("nonsense")


def test_flower_run_config_maps_flat_keys_and_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[federation]\nrounds = 9\nnum-clients = 6\n")
    config = from_run_config({"config-file": str(path), "federation.rounds": 3})
    assert config.federation.rounds == 3
    assert config.federation.num_clients == 6
    via_set = from_run_config(
        {"config-file": str(path), "set": "federation.rounds=4 training.lr=0.5"}
    )
    assert via_set.federation.rounds == 4 and via_set.training.lr == 0.5
    assert via_set.federation.num_clients == 6
    # The pyproject's own default resolves relative to the app folder.
    assert from_run_config({"config-file": "examples/demo.toml", "set": ""}).lora.r == 8
    flat = config.to_flat()
    assert flat["federation.rounds"] == 3
    assert from_run_config(flat) == config
    with pytest.raises(ConfigError, match="run_config"):
        from_run_config({"federation.roundz": 3})


def test_override_of_noise_source_replaces_the_files_other_source(tmp_path: Path) -> None:
    """--set privacy.noise-multiplier wins over a target-epsilon written in the file."""
    path = tmp_path / "c.toml"
    path.write_text("[privacy]\ntarget-epsilon = 8.0\n")
    config = load_config(path, ["privacy.noise-multiplier=1.5"])
    assert config.privacy.noise_multiplier == 1.5 and config.privacy.target_epsilon is None


def test_set_string_carries_the_whole_config_through_run_config() -> None:
    """A deployed run ships its config as one `set` string; it round-trips exactly."""
    config = load_config(
        None, ["lora.target-modules=['query', \"value\"]", "data.labels=['a b', 'c']"]
    )
    again = from_run_config({"config-file": "", "set": config.to_set_string()})
    assert again == config


def test_secagg_sums_that_would_wrap_the_modulus_are_refused() -> None:
    """n clients' quantised values reach n · 2^bits; Flower sums them modulo 2^32."""
    base = ["secure-aggregation.enabled=true", "federation.num-clients=300"]
    with pytest.raises(ConfigError, match="wraps around SecAgg\\+'s modulus 2\\^32") as err:
        load_config(None, [*base, "federation.clients-per-round=256",
                           "secure-aggregation.quantization-bits=24"])  # fmt: skip
    assert "clients-per-round ≤ 255" in str(err.value)
    load_config(None, [*base, "federation.clients-per-round=255",
                       "secure-aggregation.quantization-bits=24"])  # fmt: skip
    load_config(None, [*base, "federation.clients-per-round=300"])  # 300 · 2^22 < 2^32


def test_secagg_reconstruction_threshold_must_be_a_majority() -> None:
    sa = ["secure-aggregation.enabled=true"]
    with pytest.raises(ConfigError, match="must be a majority"):
        load_config(None, [*sa, "secure-aggregation.reconstruction-threshold=0.5"])
    with pytest.raises(ConfigError, match="not above half of num-shares"):
        load_config(None, [*sa, "secure-aggregation.num-shares=5",
                           "secure-aggregation.reconstruction-threshold=2"])  # fmt: skip
    load_config(None, [*sa, "secure-aggregation.reconstruction-threshold=0.51"])

"""deploy/pull_backoff.py: Flower's object pulls retry after 50 ms, not 1 s, and as patiently."""

from __future__ import annotations

import time

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

from deploy.pull_backoff import PULLERS, TUNED, shorten_pull_backoff


@pytest.fixture
def restore_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PULLERS:
        puller = getattr(inflatable_utils, name)
        monkeypatch.setattr(puller, "__kwdefaults__", dict(puller.__kwdefaults__))


def _available_after(misses: int) -> tuple[list[float], object]:
    """A pull function whose object is missing ``misses`` times; records when it was asked."""
    asked: list[float] = []

    def pull(object_id: str) -> bytes:
        asked.append(time.monotonic())
        if len(asked) <= misses:
            raise ObjectUnavailableError(object_id)
        return b"content"

    return asked, pull


def test_flower_still_has_the_back_off_we_shorten() -> None:
    """If a Flower upgrade renames these, this fails before any deployment is slowed."""
    for name in PULLERS:
        defaults = getattr(inflatable_utils, name).__kwdefaults__
        assert set(TUNED) <= set(defaults)


def test_flower_default_waits_a_second_after_a_miss() -> None:
    """The cost being removed: Flower's own first retry comes ~1 s (±20 %) after a miss."""
    asked, pull = _available_after(1)
    assert pull_objects(["a"], pull) == {"a": b"content"}
    assert asked[1] - asked[0] >= 0.75


def test_shortened_back_off_retries_quickly_and_doubles(restore_defaults: None) -> None:
    shorten_pull_backoff(initial=0.05, cap=0.2)
    asked, pull = _available_after(4)
    assert pull_objects(["a"], pull) == {"a": b"content"}
    gaps = [b - a for a, b in zip(asked, asked[1:], strict=False)]
    # 0.05, 0.1, 0.2, 0.2 (capped), each ±20 % jitter: 0.55 s in all instead of 1+2+4+8 s.
    assert len(gaps) == 4 and gaps[0] < 0.5
    assert sum(gaps) < 1.5
    defaults = inflatable_utils.pull_and_inflate_object_from_tree.__kwdefaults__
    assert defaults["initial_backoff"] == 0.05 and defaults["backoff_cap"] == 0.2


def test_patience_is_bounded_by_flowers_time_limit_not_a_try_count(restore_defaults: None) -> None:
    """A slow sender gets as long as before: no per-object try limit, Flower's 2 h limit."""
    before = dict(pull_objects.__kwdefaults__)
    shorten_pull_backoff()
    after = pull_objects.__kwdefaults__
    assert after["max_tries_per_object"] is None
    assert after["max_time"] == before["max_time"] >= 3600
    assert after["max_concurrent_pulls"] == before["max_concurrent_pulls"]


def test_a_flower_without_these_arguments_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflatable_utils, "pull_objects", lambda ids, fn: {})
    with pytest.raises(SystemExit, match="pull_objects no longer takes initial_backoff"):
        shorten_pull_backoff()

"""Central DP against whoever reads the global adapters (SECURITY.md, "Central DP").

Central DP trusts the server; what it promises is that the released adapters say little
about any one organisation. The attacks: an update that passes alone among refusals, and
noise recomputed from the run's seed or its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.checkpoint import Checkpoint, load_checkpoint, rng_state, save_checkpoint
from tests.support.central_dp import CLIP, release, strategy, update


def test_attack_one_update_among_refusals_is_hidden_as_well_as_any() -> None:
    """3 of 4 sampled clients refuse, 1 update passes. What protects that client is the
    ratio of its influence on the release (with vs without it) to the noise's std: it
    must stay ≤ 1/σ, as with 4 updates. Averaging only the accepted updates (the mean
    over 1) under noise sized for 4 gave it 4/σ."""
    sigma = 2.0
    rng = np.random.default_rng(2)
    victim = update(rng, CLIP)
    with_it = release(strategy(0.0), [victim, None, None, None])
    without = release(strategy(0.0), [None, None, None, None])
    influence = float(np.linalg.norm(with_it - without))
    noise_std = float(np.std(release(strategy(sigma), [victim, None, None, None]) - with_it))
    assert influence / noise_std <= (1 / sigma) * 1.03


def test_the_noise_cannot_be_recomputed_from_the_seed_or_the_checkpoint(tmp_path: Path) -> None:
    """Flower's wrapper drew its noise from numpy's global generator, which the server
    seeded with training.seed and saved in checkpoint.json: seeding it again gave the
    same noise. Now the noise follows neither."""
    rng = np.random.default_rng(4)
    deltas = [update(rng, 0.3) for _ in range(4)]
    plain = release(strategy(0.0), deltas)
    np.random.seed(0)
    first = release(strategy(1.0), deltas) - plain
    np.random.seed(0)
    second = release(strategy(1.0), deltas) - plain
    assert float(np.std(first - second)) == pytest.approx(CLIP / 4 * 2**0.5, rel=0.03)

    state = Checkpoint(
        round=1, run_key="k", global_arrays=[plain.astype(np.float32)], server_optimizer={},
        rng=rng_state(),
    )  # fmt: skip
    save_checkpoint(tmp_path, state)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert set(saved["rng"]) == {"python"}  # nothing of any generator that draws noise
    assert load_checkpoint(tmp_path).rng == saved["rng"]

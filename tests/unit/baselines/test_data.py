"""baselines/data.py's appearance augmentation: seeded, inside the brain only, labels untouched, and each of its
four shifts (gamma, bias field, noise, lower resolution) changes the image on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.data import Appearance, chained
from baselines.options import options_from


def batch(dims: int = 2):
    shape = (4, 1) + (24,) * dims
    image = torch.from_numpy(np.random.default_rng(5).normal(size=shape).astype(np.float32))
    image[..., :4] = 0  # outside the brain
    label = (image[:, 0] > 0).long() + 1
    return image, label


@pytest.mark.parametrize("dims", [2, 3])
def test_the_same_seed_gives_the_same_batch_and_the_background_stays_zero(dims):
    image, label = batch(dims)
    first = Appearance(p=1.0)(image.clone(), label.clone(), np.random.default_rng(0))
    second = Appearance(p=1.0)(image.clone(), label.clone(), np.random.default_rng(0))
    other = Appearance(p=1.0)(image.clone(), label.clone(), np.random.default_rng(1))
    assert torch.equal(first[0], second[0]) and not torch.equal(first[0], other[0])
    assert torch.equal(first[1], label) and (first[0][..., :4] == 0).all() and (first[0] != image).any()


@pytest.mark.parametrize("only", ["gamma", "bias", "noise", "resolution"])
def test_each_shift_alone_changes_the_brain(only):
    neutral = {"gamma": 1.0, "bias": 0.0, "noise": 0.0, "resolution": 1.0}
    active = {"gamma": 1.5, "bias": 0.3, "noise": 0.4, "resolution": 2.0}
    image, label = batch()
    out, _ = Appearance(p=1.0, **{**neutral, only: active[only]})(image.clone(), label, np.random.default_rng(0))
    unchanged, _ = Appearance(p=1.0, **neutral)(image.clone(), label, np.random.default_rng(0))
    assert torch.allclose(unchanged, image, atol=1e-5) and not torch.allclose(out, image, atol=1e-3)


def test_p_zero_changes_nothing_and_chained_skips_none():
    image, label = batch()
    out, _ = chained(None, Appearance(p=0.0))(image.clone(), label, np.random.default_rng(0))
    assert torch.equal(out, image) and chained(None, None) is None


def test_runs_saved_before_the_option_trained_without_it():
    assert options_from({"model": "unet2d", "loss": "dice_ce"}).appearance is False
    assert options_from({"model": "unet2d", "loss": "dice_ce", "appearance": True}).appearance is True

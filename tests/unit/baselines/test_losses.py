"""Baseline losses against values worked out by hand on a two-voxel, two-class example."""

import math

import pytest
import torch

from baselines.losses import LOSSES, build_loss

# voxel 0: logits (ln 3, 0) -> p = (0.75, 0.25), label 0;  voxel 1: logits (0, 0) -> p = (0.5, 0.5), label 1
LOGITS = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])  # (N=1, C=2, 2 voxels)
TARGET = torch.tensor([[0, 1]])
# per class: class 0 TP 0.75, FP 0.5, FN 0.25;  class 1 TP 0.5, FP 0.25, FN 0.5
CE = (-math.log(0.75) - math.log(0.5)) / 2                                   # 0.490415
DICE = 1 - (1.5 / 2.25 + 1.0 / 1.75) / 2                                     # 0.380952
TI_37 = (0.75 / (0.75 + 0.3 * 0.5 + 0.7 * 0.25), 0.5 / (0.5 + 0.3 * 0.25 + 0.7 * 0.5))  # α=0.3, β=0.7

CASES = [
    ("ce", {}, CE),
    ("ce", {"weight": [1.0, 3.0]}, (1 * -math.log(0.75) + 3 * -math.log(0.5)) / 4),       # 0.591781
    ("dice", {}, DICE),
    ("dice", {"include_background": False}, 1 - 1.0 / 1.75),                              # 0.428571
    ("dice_ce", {}, DICE + CE),                                                           # 0.871367
    ("dice_ce", {"lambda_dice": 2.0, "lambda_ce": 0.5}, 2 * DICE + 0.5 * CE),
    ("focal", {"gamma": 0.0}, CE),
    ("focal", {"gamma": 2.0}, (0.25 ** 2 * -math.log(0.75) + 0.5 ** 2 * -math.log(0.5)) / 2),  # 0.095634
    ("tversky", {}, DICE),
    ("tversky", {"alpha": 0.3, "beta": 0.7}, 1 - sum(TI_37) / 2),                         # 0.380893
    ("tversky", {"alpha": 0.7, "beta": 0.3}, 1 - (0.75 / 1.175 + 0.5 / 0.825) / 2),       # 0.377821
    ("focal_tversky", {"gamma": 1.0}, 1 - sum(TI_37) / 2),
    ("focal_tversky", {}, ((1 - TI_37[0]) ** 0.75 + (1 - TI_37[1]) ** 0.75) / 2),           # 0.482890
]


@pytest.mark.parametrize("name,kwargs,expected", CASES)
def test_loss_matches_hand_computed_value(name, kwargs, expected):
    assert build_loss(name, **kwargs)(LOGITS, TARGET).item() == pytest.approx(expected, abs=1e-5)


def test_hand_values_are_what_the_comments_say():
    assert CE == pytest.approx(0.490415, abs=1e-6) and DICE == pytest.approx(0.380952, abs=1e-6)
    assert ((1 - TI_37[0]) ** 0.75 + (1 - TI_37[1]) ** 0.75) / 2 == pytest.approx(0.482890, abs=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_scores_near_zero_and_gradients_flow(name):
    target = torch.randint(0, 4, (2, 5, 7), generator=torch.Generator().manual_seed(0))
    perfect = torch.nn.functional.one_hot(target, 4).movedim(-1, 1).float() * 30
    assert build_loss(name)(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    logits = torch.zeros(2, 4, 5, 7, requires_grad=True)
    build_loss(name)(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_3d_input_and_absent_class_are_finite():
    target = torch.zeros(1, 3, 3, 3, dtype=torch.long)  # only background: classes 1..3 absent
    for name in LOSSES:
        assert torch.isfinite(build_loss(name)(torch.randn(1, 4, 3, 3, 3), target))


@pytest.mark.parametrize("name,kwargs,message", [
    ("hinge", {}, "unknown loss 'hinge'"),
    ("dice", {"gamma": 2.0}, "takes no argument gamma"),
    ("tversky", {"alpha": -1.0}, "alpha and beta must be >= 0"),
    ("focal", {"gamma": -0.5}, "gamma must be >= 0"),
])
def test_bad_arguments_are_refused(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_loss(name, **kwargs)

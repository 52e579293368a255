"""core.choices: each check's accepted values and its one-sentence refusals."""

import re

import pytest

from ibsr_nnunet.core.choices import fraction, in_range, one_of, positive
from ibsr_nnunet.core.errors import InputError

MODELS = ("unet2d", "resunet2d", "denseunet2d", "unet3d")


@pytest.mark.parametrize("check, value", [
    (lambda v: one_of("--model", v, MODELS), "unet3d"),
    (lambda v: fraction("--step-size", v), 1.0),
    (lambda v: fraction("--step-size", v), 0.25),
    (lambda v: fraction("--overlap", v, with_zero=True), 0.0),
    (lambda v: in_range("--depth", v, 2), 2),
    (lambda v: in_range("--csf-fraction", v, 0, 0.9), 0.9),
    (lambda v: positive("batch_size", v), 1),
], ids=["one-of", "fraction-one", "fraction-inside", "overlap-zero", "range-low-edge", "range-high-edge", "positive"])
def test_an_allowed_value_comes_back(check, value):
    assert check(value) == value


@pytest.mark.parametrize("check, message", [
    (lambda: one_of("--model", "unet2", MODELS),
     "unknown model 'unet2' (did you mean unet2d?); pass --model with one of unet2d, resunet2d, denseunet2d, unet3d."),
    (lambda: one_of("--device", "metal", ("auto", "cuda", "cpu")),
     "unknown device 'metal'; pass --device with one of auto, cuda, cpu."),
    (lambda: one_of("--loss", "dice-ce", ("ce", "dice", "dice_ce")),
     "unknown loss 'dice-ce' (did you mean dice_ce?); pass --loss with one of ce, dice, dice_ce."),
    (lambda: fraction("--step-size", 0.0, example="e.g. 0.5 (nnU-Net's default)"),
     "--step-size 0.0 is outside (0, 1]; pass e.g. 0.5 (nnU-Net's default)."),
    (lambda: fraction("--step-size", 1.5), "--step-size 1.5 is outside (0, 1]; pass e.g. 0.5."),
    (lambda: fraction("--overlap", 1.0, with_zero=True), "--overlap 1.0 is outside [0, 1); pass e.g. 0.5."),
    (lambda: fraction("--overlap", -0.1, with_zero=True), "--overlap -0.1 is outside [0, 1); pass e.g. 0.5."),
    (lambda: in_range("--depth", 1, 2), "--depth 1 is outside [2, inf); pass a value inside it."),
    (lambda: in_range("--csf-fraction", 0.95, 0, 0.9),
     "--csf-fraction 0.95 is outside [0, 0.9]; pass a value inside it."),
    (lambda: positive("batch_size", 0), "batch_size must be positive, got 0; pass a value above 0."),
    (lambda: positive("--lr", -1e-3), "--lr must be positive, got -0.001; pass a value above 0."),
], ids=["did-you-mean", "no-near-miss", "did-you-mean-dash", "step-size-zero", "step-size-above-one",
        "overlap-one", "overlap-negative", "range-below", "range-above", "positive-zero", "positive-negative"])
def test_a_bad_value_is_one_sentence(check, message):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        check()

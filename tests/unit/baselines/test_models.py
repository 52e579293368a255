"""Baseline networks: output shapes for odd input sizes, depth, dropout and argument checks."""

import pytest
import torch

from baselines.models import MODELS, UNet, build_model, count_parameters


@pytest.mark.parametrize("name", MODELS)
def test_odd_input_sizes_give_logits_of_the_same_size(name):
    model = build_model(name, width=4, depth=3 if name == "unet3d" else 5, dropout=0.0).eval()
    shape = (2, 1, 13, 11, 9) if name == "unet3d" else (2, 1, 37, 21)
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (2, 4, *shape[2:])


def test_unet2d_default_has_four_downsamplings_batchnorm_and_dropout_04():
    model = build_model("unet2d")
    assert model.depth == 5 and model.divisor == 16 and len(model.encoders) == 4
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.drop_in.p == 0.4 and model.drop_out.p == 0.4
    assert [e.body[0].out_channels for e in model.encoders] == [32, 64, 128, 256]
    assert model.bottleneck.body[0].out_channels == 512


def test_width_depth_and_dropout_are_configurable():
    small, large = build_model("unet2d", width=8, depth=4, dropout=0.1), build_model("unet2d", width=16, depth=4)
    assert small.drop_in.p == 0.1 and small.divisor == 8
    # conv weights scale with width squared: doubling the width gives about 4x the parameters
    assert 3.8 < count_parameters(large) / count_parameters(small) < 4.2


def test_blocks_differ_by_model():
    kinds = {name: type(build_model(name, width=4, depth=3).bottleneck).__name__ for name in MODELS}
    assert kinds == {"unet2d": "ConvBlock", "resunet2d": "ResBlock", "denseunet2d": "DenseBlock", "unet3d": "ConvBlock"}
    assert build_model("unet3d", width=4, depth=3).dims == 3


def test_padding_does_not_change_results_for_divisible_input():
    torch.manual_seed(0)
    model = build_model("resunet2d", width=4, depth=3, dropout=0.0).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.clone()))
        # an odd input equals the padded input's output cropped back
        odd = x[..., :15, :13]
        padded = torch.nn.functional.pad(odd, (0, 3, 0, 1))
        assert torch.allclose(model(odd), model(padded)[..., :15, :13], atol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"dims": 4}, "dims must be 2 or 3"), ({"depth": 1}, "depth must be at least 2"),
    ({"dropout": 1.0}, "dropout in"), ({"block": "inception"}, "block must be one of"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**kwargs)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'vnet'"):
        build_model("vnet")

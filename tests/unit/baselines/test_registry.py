"""baselines.registry: the model and loss names are what build_model and build_loss accept."""

from __future__ import annotations

import pytest

from baselines import registry


def test_model_registry_is_what_build_model_accepts():
    from baselines.models import MODELS, build_model

    assert MODELS == registry.MODELS
    accepted = []
    for name in (*registry.MODELS, "vnet", "unet", "UNet2d", "resunet3d"):
        try:
            build_model(name, width=2, depth=2, dropout=0.0)
        except ValueError as err:
            assert f"unknown model {name!r}" in str(err)
        else:
            accepted.append(name)
    assert tuple(accepted) == registry.MODELS


def test_loss_registry_is_the_loss_builder_keys():
    from baselines import losses

    assert tuple(losses._CLASSES) == registry.LOSSES == tuple(losses.LOSSES)
    for name in registry.LOSSES:
        assert isinstance(losses.build_loss(name), losses._CLASSES[name])
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.build_loss("hinge")

"""models/registry.py: kinds register themselves and answer for their names by membership; a new kind is one class."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.oriented import Prediction
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.models import (
    TrainedModel,
    Validation,
    checked_name,
    kind_of,
    known,
    load_model,
    registry,
    trained_models,
)
from ibsr_nnunet.models.baseline import BaselineModel
from ibsr_nnunet.models.nnunet import NnunetModel


@dataclass(frozen=True)
class ThresholdModel(TrainedModel):
    """A third kind, as a test makes one: every voxel above 0 is white matter."""

    kind = "threshold"

    @classmethod
    def claims(cls, name: str) -> bool:
        return name == "threshold"

    @classmethod
    def examples(cls) -> tuple[str, ...]:
        return ("threshold",)

    @classmethod
    def refusal_of_name(cls, name: str) -> str:
        return "is not threshold"

    @classmethod
    def trained_names(cls, ws: Workspace) -> list[str]:
        return ["threshold"] if (ws.root / "threshold.txt").is_file() else []

    @property
    def folder(self) -> Path:
        return self.ws.root

    def weight_files(self) -> list[Path]:
        return [self.ws.root / "threshold.txt"]

    remake = "echo"
    retrain = "echo"

    def trained(self) -> bool:
        return (self.ws.root / "threshold.txt").is_file()

    def refusal(self, then: str = "segment") -> str | None:
        return None if self.trained() else "no threshold.txt"

    def predict(self, volumes, settings):
        for key, volume in volumes:
            yield Prediction(key, (volume.array > 0).astype("uint8") * 3)

    def validation(self) -> Validation:
        return Validation({"internal_val_dice": 0.5})

    def training_seconds(self) -> float:
        return 0.0

    def training_curves(self) -> dict[str, pd.DataFrame]:
        return {}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    (tmp_path / "ws").mkdir()
    return Workspace.open(tmp_path / "ws")


@pytest.fixture
def third_kind(monkeypatch):
    monkeypatch.setattr(registry, "KINDS", list(registry.KINDS))
    registry.register(ThresholdModel)
    return ThresholdModel


@pytest.mark.parametrize("name, kind", [("nnunet_2d", NnunetModel), ("nnunet_3d_fullres", NnunetModel),
                                        ("nnunet_ensemble", NnunetModel), ("unet2d__dice_ce", BaselineModel),
                                        ("unet3d__focal_tversky", BaselineModel), ("nnunet_custom", None),
                                        ("unet2d", None), ("my-model.v2", None)])
def test_each_name_belongs_to_the_kind_that_claims_it(name, kind):
    assert kind_of(name) is kind and known(name) is (kind is not None)


def test_a_registered_kind_appears_everywhere_with_no_other_change(ws, third_kind):
    assert known("threshold") and kind_of("threshold") is ThresholdModel
    assert checked_name("threshold") == "threshold"
    model = load_model(ws, "threshold")
    assert isinstance(model, ThresholdModel) and model.name == "threshold" and not model.trained()
    assert trained_models(ws) == []
    (ws.root / "threshold.txt").write_text("0")
    assert [m.name for m in trained_models(ws)] == ["threshold"]
    assert model.validation().columns == {"internal_val_dice": 0.5}


def test_the_leaderboards_validation_columns_ask_every_kind(ws, third_kind):
    from ibsr_nnunet.evaluation.leaderboard import validation_columns

    found, unreadable = validation_columns(ws, ["threshold", "from-elsewhere"])
    assert found == {"threshold": {"internal_val_dice": 0.5}} and unreadable == []


def test_a_third_kind_is_gone_when_unregistered(ws, monkeypatch):
    monkeypatch.setattr(registry, "KINDS", [BaselineModel, NnunetModel])
    assert load_model(ws, "threshold") is None and not known("threshold")


@pytest.mark.parametrize("name, refusal", [
    ("nnunet_custom", "--model 'nnunet_custom' is not an nnU-Net model; pass one of nnunet_2d, nnunet_3d_fullres, "
                      "nnunet_ensemble (default plans), or nnunet_<preset>_2d|3d_fullres|ensemble with <preset> "
                      "resencm, resencl or resencxl."),
    ("unet2d__hinge", "--model 'unet2d__hinge' is not MODEL__LOSS with MODEL in unet2d"),
    ("unet2d", "--model 'unet2d' is not MODEL__LOSS with MODEL in unet2d"),
    ("../x", "--model '../x' is not a usable model name"),
])
def test_an_unknown_name_is_refused_in_the_words_of_the_kind_it_looks_like(name, refusal):
    with pytest.raises(InputError, match="^" + refusal.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        checked_name(name)


def test_kinds_answer_for_their_own_history_and_validation_without_records(ws):
    for name in ("nnunet_2d", "unet2d__dice_ce"):
        model = load_model(ws, name)
        assert not model.trained() and model.validation().columns == {}
        assert math.isnan(model.training_seconds()) and model.training_curves() == {}

"""What every trained model of a workspace is, whatever made it: a name and kind, the folder its provenance is
recorded in, the weight files it is, the orientation and preprocessing it was trained with, whether it is ready,
prediction of volumes already in its training orientation, and its validation scores and training history."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Optional

import pandas as pd

from ..core.manifest import read_manifest
from ..core.oriented import Prediction
from ..core.provenance import dataset_fingerprint, staleness, weights_signature
from ..core.workspace import Workspace
from ..data.preprocess import Preprocessing
from ..data.volumes import Volume


@dataclass(frozen=True)
class Training:
    """What the workspace's training images looked like: their axis codes and the preprocessing they got."""

    axcodes: tuple[str, ...]
    preprocessing: Preprocessing


def training(ws: Workspace) -> Training:
    """The conversion manifest's training orientation and preprocessing (the one place models read it)."""
    manifest = read_manifest(ws)
    settings = dict(manifest.preprocessing)
    settings["n4_iterations"] = tuple(settings["n4_iterations"])
    return Training(manifest.training_axcodes, Preprocessing(**settings))


@dataclass(frozen=True)
class PredictSettings:
    """How to predict: the device, test-time mirroring, the sliding window's step (a fraction of the window),
    whether to sum each class's probability, worker processes, and a scratch folder the model may write to."""

    device: str = "auto"
    tta: bool = False
    step_size: float = 0.5
    probabilities: bool = False
    jobs: int = 1
    scratch: Optional[Path] = None


@dataclass(frozen=True)
class Validation:
    """A model's validation columns for the leaderboard (never ranked on), and a sentence when its summaries could
    not be read."""

    columns: dict[str, float]
    unreadable: Optional[str] = None


@dataclass(frozen=True)
class TrainedModel(ABC):
    """A trained model of the workspace `ws` named `name`. A kind subclasses this once, answers for its names by
    membership (`claims`), and registers itself with models.registry.register."""

    ws: Workspace
    name: str
    kind: ClassVar[str]

    # ---- which names are this kind's --------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def claims(cls, name: str) -> bool:
        """Whether `name` is a name of this kind (membership in its names, never a prefix)."""

    @classmethod
    @abstractmethod
    def examples(cls) -> tuple[str, ...]:
        """Names of this kind, for refusals and for telling which kind a near-miss meant."""

    @classmethod
    @abstractmethod
    def refusal_of_name(cls, name: str) -> str:
        """A phrase following the name: why `name`, which looks like this kind's, is not one of its names."""

    @classmethod
    @abstractmethod
    def trained_names(cls, ws: Workspace) -> list[str]:
        """The names of this kind that have trained weights in `ws`, sorted."""

    # ---- provenance and reuse ---------------------------------------------------------------------------------
    @property
    @abstractmethod
    def folder(self) -> Path:
        """The folder whose provenance record says which dataset the model was made from."""

    @abstractmethod
    def weight_files(self) -> list[Path]:
        """The files that are the model: when their bytes change, its predictions are another model's."""

    @property
    @abstractmethod
    def remake(self) -> str:
        """The command that makes this model's prediction set again."""

    @property
    @abstractmethod
    def retrain(self) -> str:
        """The command that makes a stale model from this dataset again."""

    def stale(self) -> Optional[str]:
        """Why the model was made from another dataset than the workspace's, or None."""
        return staleness(self.folder, dataset_fingerprint(self.ws))

    def signature(self) -> str:
        """Changes whenever the model's weights (bytes, size or mtime) or the dataset change."""
        identity = {"model": self.name, "dataset": dataset_fingerprint(self.ws),
                    "weights": weights_signature(self.ws, self.weight_files())}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    # ---- readiness --------------------------------------------------------------------------------------------
    @abstractmethod
    def trained(self) -> bool:
        """Whether the model's weights are in the workspace."""

    @abstractmethod
    def refusal(self, then: str = "segment") -> Optional[str]:
        """None when the model can predict now; else one sentence: not trained here, stale, its record broken, or
        its training not finished or being written (what to do, `then` the command asked for, e.g. predict)."""

    # ---- orientation, preprocessing, prediction ---------------------------------------------------------------
    @cached_property
    def _training(self) -> Training:
        return training(self.ws)

    @property
    def axcodes(self) -> tuple[str, ...]:
        """The axis codes of the images the model was trained on."""
        return self._training.axcodes

    @property
    def preprocessing(self) -> Preprocessing:
        """What was applied to each training image before training."""
        return self._training.preprocessing

    @abstractmethod
    def predict(self, volumes: Iterable[tuple[str, Volume]], settings: PredictSettings) -> Iterator[Prediction]:
        """Each (key, volume) already in the training orientation and preprocessed, predicted; `volumes` may be a
        generator (the model may take the next one before it yields a prediction); failures are yielded, not
        raised."""

    # ---- validation and training history ----------------------------------------------------------------------
    @abstractmethod
    def validation(self) -> Validation:
        """The leaderboard's validation columns: cross-validation or internal validation Dice."""

    @abstractmethod
    def training_seconds(self) -> float:
        """Seconds spent training the model; NaN when unknown."""

    @abstractmethod
    def training_curves(self) -> dict[str, pd.DataFrame]:
        """label -> epoch, train_loss, val_loss, ... per run or fold; empty without logs."""

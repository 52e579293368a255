"""What every trained model of a workspace is, whatever made it: a name and kind, the folder its provenance is
recorded in, the weight files it is, the orientation and preprocessing it was trained with, whether it is ready,
prediction of volumes already in its training orientation, its validation scores and training history, and where
a training job of it stands."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Optional

import pandas as pd

from ..core.errors import InputError
from ..core.manifest import Manifest, read_manifest
from ..core.oriented import Prediction
from ..core.provenance import PROVENANCE_FILE, staleness, weights_signature
from ..core.runlog import Run
from ..core.workspace import Workspace
from ..data.preprocess import Preprocessing
from ..data.volumes import Volume


@dataclass(frozen=True)
class Training:
    """What the workspace's training images looked like: their axis codes and the preprocessing they got."""

    axcodes: tuple[str, ...]
    preprocessing: Preprocessing


def training(manifest: Manifest) -> Training:
    """The conversion manifest's training orientation and preprocessing (the one place models read them)."""
    settings = dict(manifest.preprocessing)
    settings["n4_iterations"] = tuple(settings["n4_iterations"])
    return Training(manifest.training_axcodes, Preprocessing(**settings))


@dataclass(frozen=True)
class PredictSettings:
    """How to predict: the device, test-time mirroring, the sliding window's step (a fraction of the window),
    whether to sum each class's probability, worker processes, a scratch folder the model may write to, and whether
    a model that predicts at the scan's own spacing resamples one far from its training spacing first."""

    device: str = "auto"
    tta: bool = False
    step_size: float = 0.5
    probabilities: bool = False
    jobs: int = 1
    scratch: Optional[Path] = None
    resample: bool = True


@dataclass(frozen=True)
class Validation:
    """A model's validation columns for the leaderboard (never ranked on), and a sentence when its summaries could
    not be read."""

    columns: dict[str, float]
    unreadable: Optional[str] = None


@dataclass(frozen=True)
class TrainingJob:
    """One training job of a model, as a campaign submitted it: the epochs it trains (None: unknown), its fold (None
    for a model trained in one run) and the trainer it runs (None for kinds with one trainer)."""

    epochs: Optional[int] = None
    fold: Optional[int] = None
    trainer: Optional[str] = None


@dataclass(frozen=True)
class Progress:
    """Where a training job stands, read from the files training writes (no torch, no SLURM): epochs done, the
    latest pseudo-Dice and validation loss, the final validation Dice, whether it finished, its run history
    (runs.jsonl) and the recent epochs' seconds on the current device; `folder` is where its provenance lies."""

    folder: Path
    epochs_done: int = 0
    pseudo_dice: Optional[float] = None
    val_loss: Optional[float] = None
    validation_dice: Optional[float] = None
    finished: bool = False
    runs: tuple[Run, ...] = field(default_factory=tuple)
    epoch_seconds: tuple[float, ...] = field(default_factory=tuple)


RECENT_EPOCHS = 20  # Progress.epoch_seconds: this many latest epochs on the current device


def current_device(runs: Iterable[Run]) -> Optional[str]:
    """The device model of the latest run that recorded one."""
    names = [run.start.get("device_name") for run in runs if run.start.get("device_name")]
    return names[-1] if names else None


@dataclass(frozen=True)
class TrainedModel(ABC):
    """A trained model of the workspace `ws` named `name`. A kind subclasses this once, answers for its names by
    membership (`claims`), and registers itself with models.registry.register."""

    ws: Workspace
    name: str
    given_manifest: Optional[Manifest] = field(default=None, kw_only=True, compare=False, repr=False)
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

    def portable_files(self) -> list[Path]:
        """The files of the workspace this model needs to be used elsewhere (what a bundle carries of it, beside the
        workspace-wide records): its weights and the records beside them."""
        return [*self.weight_files(), *(p for p in (self.folder / PROVENANCE_FILE,) if p.is_file())]

    @property
    @abstractmethod
    def remake(self) -> str:
        """The command that makes this model's prediction set again."""

    @property
    @abstractmethod
    def retrain(self) -> str:
        """The command that makes a stale model from this dataset again."""

    @cached_property
    def manifest(self) -> Manifest:
        """The workspace's conversion manifest: the one the command read and gave at loading, else read here once."""
        return self.given_manifest if self.given_manifest is not None else read_manifest(self.ws)

    def stale(self) -> Optional[str]:
        """Why the model was made from another dataset than the workspace's, or None."""
        return staleness(self.folder, self.manifest.fingerprint)

    def signature(self) -> str:
        """Changes whenever the model's weights (bytes, size or mtime) or the dataset change."""
        identity = {"model": self.name, "dataset": self.manifest.fingerprint,
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
        return training(self.manifest)

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

    def progress(self, job: TrainingJob) -> Progress:
        """Where `job` stands, while it trains or after; an InputError when the kind trains no such job (a kind that
        campaigns train overrides this)."""
        raise InputError(f"model {self.name} is trained by no campaign job.")

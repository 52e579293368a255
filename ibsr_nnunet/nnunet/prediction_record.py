"""An nnU-Net prediction set's record, `<workspace>/predictions/nnunet_*/model.json`: the one module that writes and
reads it.

    model                nnunet_2d, nnunet_3d_fullres, nnunet_ensemble, nnunet_resencm_2d, ...
    trainer              our trainer's name (IbsrTrainer, IbsrTrainer_<E>ep_<I>it)
    configurations       the configurations it predicts with, e.g. ["2d", "3d_fullres"] for the ensemble
    plans                nnU-Net's plans of each of them, e.g. ["nnUNetPlans", "nnUNetResEncUNetMPlans"] (a record
                         without it predicts with nnUNetPlans)
    folds                the folds averaged, e.g. [0, 1, 2, 3, 4]
    postprocessing       each postprocessing step in words, e.g. ["remove_all_but_largest_component_..([3])"]
    postprocessing_file  nnU-Net's postprocessing.pkl that `segment` applies
    crossval_dice        the cross-validation foreground-mean Dice of the best-configuration search
    axcodes              the axis codes of the images it was trained on, e.g. ["R", "A", "S"]

Written by `ensemble` into each set it builds; read by `segment`, `leaderboard` and the training history. A record
without postprocessing, crossval_dice or axcodes (made by hand) has none of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.atomic import write_json
from ..core.errors import InputError
from ..core.jsonfile import read_json_object
from .paths import PLANS, Member

RECORD_FILE = "model.json"
REWRITE = "run `ibsr-nnunet ensemble` again to rewrite it"


@dataclass(frozen=True)
class PredictionRecord:
    """What `segment` needs to predict like this set's model did (the keys of this module's docstring)."""

    model: str
    trainer: str
    configurations: tuple[str, ...]
    folds: tuple[int, ...]
    postprocessing_file: Optional[Path]
    postprocessing: tuple[str, ...] = ()
    crossval_dice: Optional[float] = None
    axcodes: Optional[tuple[str, ...]] = None
    plans: tuple[str, ...] = ()  # one per configuration; () is nnUNetPlans for each

    def __post_init__(self) -> None:
        if not self.plans:
            object.__setattr__(self, "plans", (PLANS,) * len(self.configurations))

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(Member(p, c) for p, c in zip(self.plans, self.configurations))

    def as_record(self) -> dict:
        return {"model": self.model, "trainer": self.trainer, "configurations": list(self.configurations),
                "plans": list(self.plans),
                "folds": list(self.folds), "postprocessing": list(self.postprocessing),
                "postprocessing_file": str(self.postprocessing_file) if self.postprocessing_file else None,
                "crossval_dice": self.crossval_dice,
                "axcodes": list(self.axcodes) if self.axcodes is not None else None}


def prediction_record_path(folder: Path) -> Path:
    return Path(folder) / RECORD_FILE


def write_prediction_record(folder: Path, record: PredictionRecord) -> None:
    write_json(prediction_record_path(folder), record.as_record())


def read_prediction_record(folder: Path) -> Optional[PredictionRecord]:
    """The set's model.json, or None when it has none; InputError naming the file when it is cut short or not a
    record (a trainer that is not a name, folds that are not whole numbers, ...)."""
    path = prediction_record_path(folder)
    saved = read_json_object(path, REWRITE, "an nnU-Net model record", missing_ok=True)
    if saved is None:
        return None
    try:
        trainer, configurations, folds = saved["trainer"], saved["configurations"], saved["folds"]
        if not isinstance(trainer, str) or not _strings(configurations) or not isinstance(folds, list) or any(
                not isinstance(f, int) or isinstance(f, bool) for f in folds):
            raise TypeError("trainer must be a name, configurations names and folds whole numbers")
        pkl, dice, axcodes = saved.get("postprocessing_file"), saved.get("crossval_dice"), saved.get("axcodes")
        plans = saved.get("plans") or []
        if not _strings(plans) or len(plans) not in (0, len(configurations)):
            raise TypeError("plans must name nnU-Net's plans of each configuration")
        return PredictionRecord(
            model=str(saved.get("model", Path(folder).name)), trainer=trainer, configurations=tuple(configurations),
            folds=tuple(folds), postprocessing_file=Path(pkl) if pkl else None,
            postprocessing=tuple(map(str, saved.get("postprocessing") or ())),
            crossval_dice=None if dice is None else float(dice),
            axcodes=tuple(axcodes) if axcodes and _strings(axcodes) else None, plans=tuple(plans))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path} is not an nnU-Net model record ({type(err).__name__}: {err}); {REWRITE}.") from None


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)

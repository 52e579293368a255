"""nnU-Net's names for our trainers, models and folds, and the folders it keeps them in (no nnunetv2 import);
fold.py reads what a fold folder holds."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.vocabulary import CONFIGURATIONS, NNUNET_MODELS, SPLITS_FILE
from ..core.workspace import Workspace

FULL_EPOCHS, FULL_ITERATIONS = 1000, 250  # nnU-Net's default schedule
TRAINER_BASE = "IbsrTrainer"
SHORT_TRAINER = re.compile(rf"{TRAINER_BASE}_(\d+)ep_(\d+)it")
PLANS = "nnUNetPlans"
FINGERPRINT_FILE = "dataset_fingerprint.json"
PLAN_STAMP_FILE = "ibsr_plan.json"
MODEL_FOLDER = re.compile(rf"(?P<trainer>.+)__{PLANS}__(?P<configuration>{'|'.join(CONFIGURATIONS)})")
# nnU-Net writes these beside the folds of a model folder, and needs them to use any of its folds
TRAINER_FILES = ("plans.json", "dataset.json", FINGERPRINT_FILE)
MODEL_NAMES = NNUNET_MODELS  # "2d" | "3d_fullres" | "ensemble" -> nnunet_2d | nnunet_3d_fullres | nnunet_ensemble


def trainer_name(epochs: int = FULL_EPOCHS, iterations: int = FULL_ITERATIONS) -> str:
    """Our trainer's name for a schedule; a short schedule says so in its name (and so in its results folder)."""
    if (epochs, iterations) == (FULL_EPOCHS, FULL_ITERATIONS):
        return TRAINER_BASE
    return f"{TRAINER_BASE}_{epochs}ep_{iterations}it"


def trainer_schedule(name: str) -> tuple[int, int]:
    """(epochs, iterations per epoch) of one of our trainer names; KeyError for any other name."""
    if name == TRAINER_BASE:
        return FULL_EPOCHS, FULL_ITERATIONS
    match = SHORT_TRAINER.fullmatch(name)
    if not match:
        raise KeyError(name)
    return int(match.group(1)), int(match.group(2))


def plans_file(ws: Workspace) -> Path:
    return ws.preprocessed_dataset / f"{PLANS}.json"


def splits_file(ws: Workspace) -> Path:
    """nnU-Net's cross-validation folds; `convert` writes them into the raw dataset too, and nnU-Net copies them."""
    return ws.preprocessed_dataset / SPLITS_FILE


def fingerprint_file(ws: Workspace) -> Path:
    """nnU-Net's fingerprint of the dataset (intensities, spacings), written by `plan`."""
    return ws.preprocessed_dataset / FINGERPRINT_FILE


def plan_stamp(ws: Workspace) -> Path:
    """What `plan` did last: the raw dataset's fingerprint and the configurations (so it can tell when to redo)."""
    return ws.preprocessed_dataset / PLAN_STAMP_FILE


def model_folder(ws: Workspace, configuration: str, trainer: str) -> Path:
    """nnU-Net's results folder of one trainer and configuration (its plans are always nnUNetPlans here)."""
    return ws.results_dataset / f"{trainer}__{PLANS}__{configuration}"


def trainer_files(model: Path) -> list[Path]:
    """The files of TRAINER_FILES that exist in the model folder `model`."""
    return [model / name for name in TRAINER_FILES if (model / name).is_file()]


def fold_folder(ws: Workspace, configuration: str, fold: int, *, trainer: str) -> Path:
    return model_folder(ws, configuration, trainer) / f"fold_{fold}"

"""nnU-Net's names for our trainers, models and folds, and the folders it keeps them in (no nnunetv2 import);
fold.py reads what a fold folder holds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.vocabulary import CONFIGURATIONS, SPLITS_FILE, nnunet_model_name
from ..core.workspace import Workspace
from .presets import BY_PLANS, DEFAULT, Preset

FULL_EPOCHS, FULL_ITERATIONS = 1000, 250  # nnU-Net's default schedule
TRAINER_BASE = "IbsrTrainer"
SHORT_TRAINER = re.compile(rf"{TRAINER_BASE}_(\d+)ep_(\d+)it")
PLANS = DEFAULT.plans  # nnUNetPlans
FINGERPRINT_FILE = "dataset_fingerprint.json"
PLAN_STAMP_FILE = "ibsr_plan.json"  # of the default plans; ibsr_plan_<plans>.json of another preset
MODEL_FOLDER = re.compile(rf"(?P<trainer>.+)__(?P<plans>{'|'.join(BY_PLANS)})__"
                          rf"(?P<configuration>{'|'.join(CONFIGURATIONS)})")
# nnU-Net writes these beside the folds of a model folder, and needs them to use any of its folds
TRAINER_FILES = ("plans.json", "dataset.json", FINGERPRINT_FILE)


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


def plans_file(ws: Workspace, preset: Preset = DEFAULT) -> Path:
    return ws.preprocessed_dataset / f"{preset.plans}.json"


def splits_file(ws: Workspace) -> Path:
    """nnU-Net's cross-validation folds; `convert` writes them into the raw dataset too, and nnU-Net copies them."""
    return ws.preprocessed_dataset / SPLITS_FILE


def fingerprint_file(ws: Workspace) -> Path:
    """nnU-Net's fingerprint of the dataset (intensities, spacings), written by `plan`."""
    return ws.preprocessed_dataset / FINGERPRINT_FILE


def plan_stamp(ws: Workspace, preset: Preset = DEFAULT) -> Path:
    """What `plan` did last for a preset: the raw dataset's fingerprint and the configurations (so it can tell when
    to redo)."""
    name = PLAN_STAMP_FILE if preset.is_default else f"ibsr_plan_{preset.plans}.json"
    return ws.preprocessed_dataset / name


def model_folder(ws: Workspace, configuration: str, trainer: str, plans: str = PLANS) -> Path:
    """nnU-Net's results folder of one trainer, plans and configuration."""
    return ws.results_dataset / f"{trainer}__{plans}__{configuration}"


def trainer_files(model: Path) -> list[Path]:
    """The files of TRAINER_FILES that exist in the model folder `model`."""
    return [model / name for name in TRAINER_FILES if (model / name).is_file()]


def fold_folder(ws: Workspace, configuration: str, fold: int, *, trainer: str, plans: str = PLANS) -> Path:
    return model_folder(ws, configuration, trainer, plans) / f"fold_{fold}"


@dataclass(frozen=True)
class Member:
    """One nnU-Net model of a trainer: a preset's plans and a configuration (nnunet_2d, nnunet_resencm_3d_fullres)."""

    plans: str
    configuration: str

    @property
    def preset(self) -> Preset:
        return BY_PLANS[self.plans]

    @property
    def name(self) -> str:
        return nnunet_model_name(self.configuration, self.preset.name)

    @property
    def label(self) -> str:
        """'2d' for the default plans, 'resenc-m 2d' for another preset."""
        return self.preset.label(self.configuration)

    def folder(self, ws: Workspace, trainer: str) -> Path:
        return model_folder(ws, self.configuration, trainer, self.plans)

    def fold(self, ws: Workspace, trainer: str, fold: int) -> Path:
        return fold_folder(ws, self.configuration, fold, trainer=trainer, plans=self.plans)


def member_order(member: Member) -> tuple[int, int]:
    """Presets in their table's order, then 2d before 3d_fullres."""
    return list(BY_PLANS).index(member.plans), CONFIGURATIONS.index(member.configuration)

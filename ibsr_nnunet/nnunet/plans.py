"""What `plan` leaves for later steps: nnU-Net's plans and cross-validation splits, read and checked in one sentence."""

from __future__ import annotations

from ..core.errors import InputError
from ..core.jsonfile import read_json
from ..core.workspace import Workspace
from .paths import plans_file, splits_file

REPLAN = "run `ibsr-nnunet plan --force` to plan and preprocess again"


def read_plans(ws: Workspace) -> dict:
    """nnU-Net's plans (nnUNetPlans.json); InputError when missing, cut short, or without its configurations."""
    path = plans_file(ws)
    plans = read_json(path, REPLAN)
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise InputError(f"{path} holds no nnU-Net plans (no \"configurations\" table); {REPLAN}.")
    return plans


def read_splits(ws: Workspace) -> list[dict]:
    """The cross-validation folds (splits_final.json: a list of {"train": [...], "val": [...]}); InputError when
    missing, cut short or of another shape."""
    path = splits_file(ws)
    splits = read_json(path, REPLAN)
    if not isinstance(splits, list) or not splits or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list)
            for s in splits):
        raise InputError(f"{path} is not a list of folds like [{{\"train\": [...], \"val\": [...]}}, ...]; {REPLAN}.")
    return splits

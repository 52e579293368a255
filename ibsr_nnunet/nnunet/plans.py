"""What `plan` leaves for later steps, read and checked in one sentence: the one module that reads these files.

    nnUNetPlans.json   nnU-Net's plans (written by nnU-Net's planner): {"configurations": {name: {...}}, ...};
                       nnUNetResEncUNet{M,L,XL}Plans.json of the other presets
    splits_final.json  the cross-validation folds, [{"train": [ids], "val": [ids]}, ...]: written by `convert`
                       into the raw dataset and the preprocessed folder (nnU-Net reads it there)
    dataset.json       nnU-Net's copy of the raw dataset's dataset.json in the preprocessed folder
    dataset_fingerprint.json  nnU-Net's fingerprint of the dataset: foreground intensities per channel, spacings
    ibsr_plan.json     what `plan` did last for the default plans (ibsr_plan_<plans>.json for another preset):
                       {"raw_fingerprint": the manifest's fingerprint, "configurations": [sorted names], "planned":
                       local time, "data_identifiers": {configuration: nnU-Net's preprocessed data folder},
                       "preprocessed": [configurations it preprocessed], "reused": [configurations whose data an
                       earlier plan of the same dataset had preprocessed]}; written last, so a plan cut short has
                       none"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.atomic import write_json
from ..core.errors import InputError
from ..core.jsonfile import read_json, read_json_object
from ..core.vocabulary import SPLITS_FILE
from ..core.workspace import Workspace
from .paths import fingerprint_file, plan_stamp, plans_file, splits_file
from .presets import DEFAULT, Preset


def replan(preset: Preset = DEFAULT) -> str:
    return f"run `ibsr-nnunet plan --force{preset.option('--presets')}` to plan and preprocess again"


REPLAN = replan()


def read_plans(ws: Workspace, preset: Preset = DEFAULT) -> dict:
    """nnU-Net's plans of a preset (nnUNetPlans.json for the default); InputError when missing, cut short, or
    without its configurations."""
    path = plans_file(ws, preset)
    plans = read_json(path, replan(preset))
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise InputError(f"{path} holds no nnU-Net plans (no \"configurations\" table); {replan(preset)}.")
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


def write_splits(dataset: Path, folds: list[dict]) -> Path:
    """splits_final.json of a dataset folder (raw or preprocessed); its path."""
    path = Path(dataset) / SPLITS_FILE
    write_json(path, folds)
    return path


def read_preprocessed_dataset_json(ws: Workspace) -> dict:
    """nnU-Net's dataset.json in the preprocessed folder, which its trainer needs."""
    return read_json_object(ws.preprocessed_dataset / "dataset.json", REPLAN, "nnU-Net's dataset.json")


def read_dataset_fingerprint(ws: Workspace) -> Optional[dict]:
    """nnU-Net's dataset_fingerprint.json, or None before `plan` made one."""
    return read_json_object(fingerprint_file(ws), REPLAN, "nnU-Net's dataset fingerprint", missing_ok=True)


@dataclass(frozen=True)
class PlanStamp:
    """ibsr_plan[_<plans>].json: the dataset and configurations the last finished `plan` of a preset planned and
    made ready (preprocessed, or reusing data an earlier plan of the same dataset preprocessed)."""

    raw_fingerprint: Optional[str]  # None: not planned by ibsr-nnunet
    configurations: tuple[str, ...]
    planned: str = ""
    data_identifiers: tuple[tuple[str, str], ...] = ()  # (configuration, nnU-Net's data identifier)
    preprocessed: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()


def write_plan_stamp(ws: Workspace, fingerprint: str, configurations: tuple[str, ...], *, preset: Preset = DEFAULT,
                     data_identifiers: Optional[dict[str, str]] = None, preprocessed: tuple[str, ...] = (),
                     reused: tuple[str, ...] = ()) -> None:
    write_json(plan_stamp(ws, preset), {
        "raw_fingerprint": fingerprint, "configurations": sorted(configurations),
        "planned": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "data_identifiers": dict(sorted((data_identifiers or {}).items())),
        "preprocessed": sorted(preprocessed), "reused": sorted(reused)})


def read_plan_stamp(ws: Workspace, preset: Preset = DEFAULT) -> Optional[PlanStamp]:
    """What the last finished `plan` of a preset did; None when none finished; InputError when the stamp is cut
    short."""
    saved = read_json(plan_stamp(ws, preset), replan(preset), missing_ok=True)
    if saved is None:
        return None
    saved = saved if isinstance(saved, dict) else {}
    fingerprint = saved.get("raw_fingerprint")
    identifiers = saved.get("data_identifiers")
    identifiers = identifiers if isinstance(identifiers, dict) else {}
    return PlanStamp(fingerprint if isinstance(fingerprint, str) else None,
                     tuple(map(str, saved.get("configurations") or ())), str(saved.get("planned", "")),
                     tuple((str(c), str(d)) for c, d in identifiers.items()),
                     tuple(map(str, saved.get("preprocessed") or ())), tuple(map(str, saved.get("reused") or ())))

"""nnU-Net fingerprinting, planning and preprocessing, redone only when the dataset or the configurations change."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from typing import Optional

from ..core.atomic import write_json
from ..core.errors import InputError
from ..core.vocabulary import CONFIGURATIONS
from ..core.workspace import Workspace
from .environment import fork_pools
from .paths import plan_stamp, plans_file

PLANNABLE = (*CONFIGURATIONS, "3d_lowres")


@dataclass
class PlanResult:
    configurations: dict[str, dict]  # name -> patch size, batch size, spacing, stages, median shape
    dropped: list[str]  # configurations nnU-Net decided not to make (3d_lowres for IBSR-sized images)
    up_to_date: bool


def _summarise_plans(plans: dict) -> dict[str, dict]:
    summary = {}
    for name, config in plans["configurations"].items():
        if "patch_size" not in config:
            continue
        summary[name] = {
            "patch_size": config["patch_size"],
            "batch_size": config["batch_size"],
            "spacing": [round(float(s), 4) for s in config["spacing"]],
            "stages": config["architecture"]["arch_kwargs"]["n_stages"],
            "median_shape": config["median_image_size_in_voxels"],
        }
    return summary


def _result(plans: dict, configurations: tuple[str, ...], up_to_date: bool) -> PlanResult:
    summary = _summarise_plans(plans)
    return PlanResult(summary, [c for c in configurations if c not in summary], up_to_date)


def _planned(ws: Workspace, wanted: dict) -> Optional[dict]:
    """The plans, when `plan` already made them for exactly `wanted`; None when it must plan (again): never done,
    another dataset or configurations, or a stamp or plans file cut short."""
    try:
        recorded = json.loads(plan_stamp(ws).read_text())
        plans = json.loads(plans_file(ws).read_text())
    except (OSError, ValueError):
        return None
    return plans if {k: recorded.get(k) for k in wanted} == wanted else None


def plan(ws: Workspace, configurations: tuple[str, ...] = CONFIGURATIONS, *, jobs: int = 1,
         force: bool = False) -> PlanResult:
    """nnU-Net fingerprint, plans and preprocessing (with its integrity check); skipped when already done for
    exactly this raw dataset and these configurations."""
    if not ws.manifest.is_file():
        raise InputError(f"{ws.raw_dataset}: no converted dataset in this workspace; run `ibsr-nnunet convert SOURCE` first.")
    unknown = [c for c in configurations if c not in PLANNABLE]
    if unknown:
        raise InputError(f"--configs {','.join(unknown)} unknown; use {', '.join(PLANNABLE)}.")
    fingerprint = ws.read_manifest()["fingerprint"]
    plans_json = plans_file(ws)
    wanted = {"raw_fingerprint": fingerprint, "configurations": sorted(configurations)}
    if not force and (plans := _planned(ws, wanted)) is not None:
        return _result(plans, configurations, up_to_date=True)

    import nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor as fingerprinting
    import nnunetv2.preprocessing.preprocessors.default_preprocessor as preprocessing
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                       preprocess)

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), fork_pools(fingerprinting), fork_pools(preprocessing):
            extract_fingerprints([ws.dataset_id], num_processes=jobs, check_dataset_integrity=True, clean=True)
            plan_experiments([ws.dataset_id])
            plans = json.loads(plans_json.read_text())
            present = [c for c in configurations if c in plans["configurations"]]
            preprocess([ws.dataset_id], configurations=present, num_processes=[jobs] * len(present))
    except (AssertionError, RuntimeError) as err:
        details = " ".join(f"{err}".split())[:400]
        raise InputError(f"{ws.raw_dataset}: nnU-Net planning failed ({details}); fix the dataset and convert again.") from None
    write_json(plan_stamp(ws), {**wanted, "planned": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return _result(plans, configurations, up_to_date=False)

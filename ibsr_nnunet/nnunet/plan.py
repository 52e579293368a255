"""nnU-Net fingerprinting, planning and preprocessing, redone only when the dataset or the configurations change."""

from __future__ import annotations

import contextlib
import errno
import io
from dataclasses import dataclass
from typing import Callable, Optional

from ..core.atomic import fsync_dir
from ..core.errors import InputError
from ..core.manifest import read_manifest
from ..core.readwrite import writing
from ..core.vocabulary import CONFIGURATIONS
from ..core.workspace import Workspace
from .environment import fork_pools
from .paths import plan_stamp, plans_file, splits_file
from .plans import read_plan_stamp, read_plans, write_plan_stamp

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


def _planned(ws: Workspace, fingerprint: str, configurations: tuple[str, ...]) -> Optional[dict]:
    """The plans, when `plan` already made them for exactly this dataset and these configurations; None when it
    must plan (again): never done, another dataset or configurations, or a stamp or plans file cut short."""
    try:
        recorded = read_plan_stamp(ws)
        plans = read_plans(ws)
    except InputError:
        return None
    if recorded is None or recorded.raw_fingerprint != fingerprint:
        return None
    return plans if list(recorded.configurations) == sorted(configurations) else None


def _invalidate(ws: Workspace) -> None:
    """Before planning again: remove the stamp first, so a plan killed from here on is seen as unfinished by the next
    `plan` and by `train`; then the files nnU-Net would merge with or check against instead of rewriting (its
    planner keeps configurations of an old plans file and crashes on a cut-short one; the raw dataset's splits are
    copied again)."""
    plan_stamp(ws).unlink(missing_ok=True)
    if ws.preprocessed_dataset.is_dir():
        fsync_dir(ws.preprocessed_dataset)
    plans_file(ws).unlink(missing_ok=True)
    if (ws.raw_dataset / splits_file(ws).name).is_file():
        splits_file(ws).unlink(missing_ok=True)


def _no_space(err: OSError, ws: Workspace) -> InputError:
    what = err.filename or "nnU-Net's fingerprint, plans and preprocessed data"
    return InputError(f"no space left on the disk of {ws.preprocessed_dataset} while writing {what}; free space "
                      f"there (or put the workspace on a larger disk) and run `ibsr-nnunet plan --force`.")


def plan(ws: Workspace, configurations: tuple[str, ...] = CONFIGURATIONS, *, jobs: int = 1,
         force: bool = False, say: Callable[[str], None] = print) -> PlanResult:
    """nnU-Net fingerprint, plans and preprocessing (with its integrity check); skipped when already done for
    exactly this raw dataset and these configurations.

    Holds the preprocessed dataset as its only writer (core/readwrite.py): refused while another `plan` writes it or
    a `train` reads it. The stamp is written last: a plan cut short is redone by the next one."""
    if not ws.manifest.is_file():
        raise InputError(f"{ws.raw_dataset}: no converted dataset in this workspace; "
                         "run `ibsr-nnunet convert SOURCE` first.")
    unknown = [c for c in configurations if c not in PLANNABLE]
    if unknown:
        raise InputError(f"--configs {','.join(unknown)} unknown; use {', '.join(PLANNABLE)}.")
    fingerprint = read_manifest(ws).fingerprint
    if not force and (plans := _planned(ws, fingerprint, configurations)) is not None:
        return _result(plans, configurations, up_to_date=True)
    with writing(ws.preprocessed_dataset, f"nnU-Net's plans and preprocessed data of {ws.dataset_name}",
                 "ibsr-nnunet plan", say=say):
        # another `plan` made them while we waited
        if not force and (plans := _planned(ws, fingerprint, configurations)) is not None:
            return _result(plans, configurations, up_to_date=True)
        _invalidate(ws)
        try:
            plans = _build(ws, configurations, jobs)
            write_plan_stamp(ws, fingerprint, configurations)
        except OSError as err:
            if err.errno == errno.ENOSPC:  # from nnU-Net's pool workers too: they raise it again in this process
                raise _no_space(err, ws) from None
            raise
    return _result(plans, configurations, up_to_date=False)


def _build(ws: Workspace, configurations: tuple[str, ...], jobs: int) -> dict:
    """nnU-Net's fingerprint, plans and preprocessing of the configurations it keeps; its plans."""
    import nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor as fingerprinting
    import nnunetv2.preprocessing.preprocessors.default_preprocessor as preprocessing
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), fork_pools(fingerprinting), fork_pools(preprocessing):
            extract_fingerprints([ws.dataset_id], num_processes=jobs, check_dataset_integrity=True, clean=True)
            plan_experiments([ws.dataset_id])
            plans = read_plans(ws)
            present = [c for c in configurations if c in plans["configurations"]]
            preprocess([ws.dataset_id], configurations=present, num_processes=[jobs] * len(present))
    except (AssertionError, RuntimeError) as err:
        details = " ".join(f"{err}".split())[:400]
        raise InputError(f"{ws.raw_dataset}: nnU-Net planning failed ({details}); "
                         "fix the dataset and convert again.") from None
    return plans

"""nnU-Net fingerprinting, planning and preprocessing of each preset, redone only when the dataset or the
configurations change."""

from __future__ import annotations

import contextlib
import errno
import io
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..core.atomic import fsync_dir
from ..core.errors import InputError
from ..core.manifest import read_manifest
from ..core.readwrite import writing
from ..core.vocabulary import CONFIGURATIONS
from ..core.workspace import Workspace
from .environment import fork_pools
from .paths import fingerprint_file, plan_stamp, plans_file, splits_file
from .plans import PlanStamp, read_plan_stamp, read_plans, write_plan_stamp
from .presets import DEFAULT, PRESET_TABLE, Preset

PLANNABLE = (*CONFIGURATIONS, "3d_lowres")


@dataclass
class PlanResult:
    """What `plan` did for one preset."""

    preset: Preset
    configurations: dict[str, dict]  # name -> patch size, batch size, spacing, stages, median shape
    dropped: list[str]  # configurations nnU-Net decided not to make (3d_lowres for IBSR-sized images)
    up_to_date: bool
    preprocessed: tuple[str, ...] = ()  # configurations preprocessed by this run
    reused: tuple[str, ...] = ()  # configurations whose preprocessed data an earlier plan had made (nnU-Net shares it)
    seconds: float = 0.0  # this preset's planning (and preprocessing) time

    @property
    def done(self) -> str:
        """What was done, in words."""
        if self.up_to_date:
            return "up to date, nothing redone"
        parts = [f"planned and preprocessed {', '.join(self.preprocessed)}"] if self.preprocessed else []
        if self.reused:
            shared = ", ".join(self.configurations[c]["data_identifier"] for c in self.reused)
            parts.append(f"planned {', '.join(self.reused)} only (experiment planning): its preprocessed data "
                         f"({shared}) was already made from this dataset")
        return "; ".join(parts) or "planned"


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
            "network": config["architecture"]["network_class_name"].rsplit(".", 1)[-1],
            "data_identifier": config["data_identifier"],
        }
    return summary


def _result(preset: Preset, plans: dict, configurations: tuple[str, ...], up_to_date: bool, **done) -> PlanResult:
    summary = _summarise_plans(plans)
    return PlanResult(preset, summary, [c for c in configurations if c not in summary], up_to_date, **done)


def _planned(ws: Workspace, preset: Preset, fingerprint: str, configurations: tuple[str, ...]) -> Optional[dict]:
    """The preset's plans, when `plan` already made them for exactly this dataset and these configurations; None when
    it must plan (again): never done, another dataset or configurations, or a stamp or plans file cut short."""
    try:
        recorded = read_plan_stamp(ws, preset)
        plans = read_plans(ws, preset)
    except InputError:
        return None
    if recorded is None or recorded.raw_fingerprint != fingerprint:
        return None
    return plans if list(recorded.configurations) == sorted(configurations) else None


def _current_stamps(ws: Workspace, fingerprint: str) -> list[tuple[Preset, PlanStamp]]:
    """Each preset whose last finished `plan` planned this very dataset, with its stamp (unreadable ones skipped)."""
    found = []
    for preset in PRESET_TABLE.values():
        try:
            recorded = read_plan_stamp(ws, preset)
        except InputError:
            continue
        if recorded is not None and recorded.raw_fingerprint == fingerprint:
            found.append((preset, recorded))
    return found


def _ready_data(ws: Workspace, fingerprint: str) -> set[str]:
    """nnU-Net's data identifiers that a finished `plan` of this very dataset made ready: preprocessed data another
    preset may share."""
    ready = set()
    for preset, recorded in _current_stamps(ws, fingerprint):
        try:
            planned = read_plans(ws, preset)["configurations"]
        except InputError:
            continue
        for configuration in recorded.configurations:
            identifier = planned.get(configuration, {}).get("data_identifier")
            if identifier and (ws.preprocessed_dataset / identifier).is_dir():
                ready.add(identifier)
    return ready


def _fingerprint_current(ws: Workspace, fingerprint: str) -> bool:
    """nnU-Net's dataset fingerprint was extracted from this very dataset by a finished `plan` of some preset."""
    return fingerprint_file(ws).is_file() and bool(_current_stamps(ws, fingerprint))


def _invalidate(ws: Workspace, preset: Preset, *, fingerprints: bool) -> None:
    """Before planning a preset again: remove its stamp first, so a plan killed from here on is seen as unfinished by
    the next `plan` and by `train`; then its plans file, which nnU-Net's planner would merge with (it keeps
    configurations of an old plans file and crashes on a cut-short one). With `fingerprints` (the fingerprint is
    extracted again) also the raw dataset's splits, which nnU-Net copies again."""
    plan_stamp(ws, preset).unlink(missing_ok=True)
    if ws.preprocessed_dataset.is_dir():
        fsync_dir(ws.preprocessed_dataset)
    plans_file(ws, preset).unlink(missing_ok=True)
    if fingerprints and (ws.raw_dataset / splits_file(ws).name).is_file():
        splits_file(ws).unlink(missing_ok=True)


def _no_space(err: OSError, ws: Workspace) -> InputError:
    what = err.filename or "nnU-Net's fingerprint, plans and preprocessed data"
    return InputError(f"no space left on the disk of {ws.preprocessed_dataset} while writing {what}; free space "
                      f"there (or put the workspace on a larger disk) and run `ibsr-nnunet plan --force`.")


def plan(ws: Workspace, configurations: tuple[str, ...] = CONFIGURATIONS, *, presets: tuple[Preset, ...] = (DEFAULT,),
         jobs: int = 1, force: bool = False, say: Callable[[str], None] = print) -> list[PlanResult]:
    """nnU-Net fingerprint, plans and preprocessing of each preset (with its integrity check); skipped when already
    done for exactly this raw dataset and these configurations. A preset whose configurations share their data
    identifier with data an earlier plan of this dataset preprocessed gets experiment planning only.

    Holds the preprocessed dataset as its only writer (core/readwrite.py): refused while another `plan` writes it or
    a `train` reads it. Each preset's stamp is written last: a plan cut short is redone by the next one."""
    if not ws.manifest.is_file():
        raise InputError(f"{ws.raw_dataset}: no converted dataset in this workspace; "
                         "run `ibsr-nnunet convert SOURCE` first.")
    unknown = [c for c in configurations if c not in PLANNABLE]
    if unknown:
        raise InputError(f"--configs {','.join(unknown)} unknown; use {', '.join(PLANNABLE)}.")
    fingerprint = read_manifest(ws).fingerprint

    def up_to_date() -> Optional[list[PlanResult]]:
        done = {p: _planned(ws, p, fingerprint, configurations) for p in presets}
        if force or any(plans is None for plans in done.values()):
            return None
        return [_result(p, plans, configurations, up_to_date=True) for p, plans in done.items()]

    if (results := up_to_date()) is not None:
        return results
    with writing(ws.preprocessed_dataset, f"nnU-Net's plans and preprocessed data of {ws.dataset_name}",
                 "ibsr-nnunet plan", say=say):
        if (results := up_to_date()) is not None:  # another `plan` made them while we waited
            return results
        results = []
        extract = force or not _fingerprint_current(ws, fingerprint)
        try:
            for preset in presets:
                if not force and (plans := _planned(ws, preset, fingerprint, configurations)) is not None:
                    results.append(_result(preset, plans, configurations, up_to_date=True))
                    continue
                started = time.perf_counter()
                _invalidate(ws, preset, fingerprints=extract)
                ready = set() if extract else _ready_data(ws, fingerprint)
                plans, preprocessed, reused = _build(ws, preset, configurations, jobs, extract=extract, ready=ready)
                extract = False  # once per run, before the first preset
                identifiers = {c: plans["configurations"][c]["data_identifier"] for c in (*preprocessed, *reused)}
                write_plan_stamp(ws, fingerprint, configurations, preset=preset, data_identifiers=identifiers,
                                 preprocessed=preprocessed, reused=reused)
                results.append(_result(preset, plans, configurations, up_to_date=False, preprocessed=preprocessed,
                                       reused=reused, seconds=time.perf_counter() - started))
        except OSError as err:
            if err.errno == errno.ENOSPC:  # from nnU-Net's pool workers too: they raise it again in this process
                raise _no_space(err, ws) from None
            raise
    return results


def _build(ws: Workspace, preset: Preset, configurations: tuple[str, ...], jobs: int, *, extract: bool,
           ready: set[str]) -> tuple[dict, tuple[str, ...], tuple[str, ...]]:
    """nnU-Net's fingerprint (when `extract`), the preset's plans, and preprocessing of the configurations it keeps
    whose data identifier is not in `ready`; (its plans, configurations preprocessed, configurations reused)."""
    import nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor as fingerprinting
    import nnunetv2.preprocessing.preprocessors.default_preprocessor as preprocessing
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), fork_pools(fingerprinting), fork_pools(preprocessing):
            if extract:
                extract_fingerprints([ws.dataset_id], num_processes=jobs, check_dataset_integrity=True, clean=True)
            plan_experiments([ws.dataset_id], experiment_planner_class_name=preset.planner)
            plans = read_plans(ws, preset)
            present = [c for c in configurations if c in plans["configurations"]]
            reused = tuple(c for c in present if plans["configurations"][c]["data_identifier"] in ready)
            todo = [c for c in present if c not in reused]
            if todo:
                preprocess([ws.dataset_id], plans_identifier=preset.plans, configurations=todo,
                           num_processes=[jobs] * len(todo))
    except (AssertionError, RuntimeError) as err:
        details = " ".join(f"{err}".split())[:400]
        raise InputError(f"{ws.raw_dataset}: nnU-Net planning failed ({details}); "
                         "fix the dataset and convert again.") from None
    return plans, tuple(todo), reused

"""The `ensemble` step: nnU-Net's best configuration, and each nnU-Net model's predictions for the held-out and test
cases."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import nibabel as nib
import numpy as np

from ..core.atomic import swap_in, write_json
from ..core.errors import InputError
from ..core.jsonfile import read_json_or_none
from ..core.locks import Lock, lock_path
from ..core.manifest import read_manifest
from ..core.orientation import towards
from ..core.provenance import (
    KEY,
    archive_stale_outputs,
    dataset_fingerprint,
    record,
    short,
    staleness,
    weights_signature,
)
from ..core.vocabulary import CONFIGURATIONS, N_FOLDS
from ..core.workspace import Workspace
from .fold import fold_finished, fold_unready
from .paths import MODEL_FOLDER, MODEL_NAMES, TRAINER_BASE, fold_folder, model_folder
from .plans import read_plans
from .predict import apply_postprocessing, ensemble_folders, find_best_configuration, postprocessing_summary, predict
from .prediction_record import PredictionRecord, write_prediction_record

BEST_CONFIGURATION_FILE = "best_configuration.json"


def finished_folds(model: Path, fingerprint: str, stale: list[str], training: list[str]) -> set[int]:
    """Folds whose training ended and whose validation (with probabilities) was written, made from the dataset
    `fingerprint`, that no live `train` writes now; a finished fold made from another one is named in `stale`
    instead, one being trained again in `training`."""
    folds = set()
    for fold in sorted(model.glob("fold_*")):
        if fold_finished(fold) and any((fold / "validation").glob("*.npz")):
            why = staleness(fold, fingerprint)
            if why:
                stale.append(f"{model.name}/{fold.name} ({why})")
            elif busy := fold_unready(fold):
                training.append(f"{model.name}/{fold.name} ({busy})")
            else:
                folds.add(int(fold.name.removeprefix("fold_")))
    return folds


def trained_models(ws: Workspace, fingerprint: str, stale: Optional[list[str]] = None,
                   training: Optional[list[str]] = None) -> dict[str, dict[str, set[int]]]:
    """trainer name -> configuration -> finished current folds, for everything under the workspace's nnU-Net
    results; stale finished folds are named in `stale`, folds a live `train` writes in `training`."""
    found: dict[str, dict[str, set[int]]] = {}
    stale = [] if stale is None else stale
    training = [] if training is None else training
    if ws.results_dataset.is_dir():
        for folder in sorted(ws.results_dataset.iterdir()):
            match = MODEL_FOLDER.fullmatch(folder.name)
            if match and (folds := finished_folds(folder, fingerprint, stale, training)):
                found.setdefault(match["trainer"], {})[match["configuration"]] = folds
    return found


@dataclass
class Selection:
    trainer: str
    configurations: tuple[str, ...]
    folds: tuple[int, ...]
    warnings: list[str] = field(default_factory=list)


def select(ws: Workspace, trainer: Optional[str] = None) -> Selection:
    """Which trainer, configurations and folds to search over: the current folds finished in every configuration
    that no live `train` writes."""
    stale: list[str] = []
    training: list[str] = []
    models = trained_models(ws, dataset_fingerprint(ws), stale, training)
    left_out = (f"; stale folds left out: {', '.join(stale)}, retrain them with `ibsr-nnunet train "
                f"--archive-stale`" if stale else "")
    left_out += (f"; folds being trained left out: {', '.join(training)}, run `ibsr-nnunet ensemble` again when "
                 f"they finish" if training else "")
    if not models:
        raise InputError(f"no finished nnU-Net fold made from this dataset under {ws.results_dataset}; "
                         f"run `ibsr-nnunet train --fold 0 --config 2d` (and 3d_fullres) first{left_out}.")
    if trainer is None:  # the trainer with the most finished folds; a full schedule wins ties
        trainer = max(models, key=lambda t: (sum(map(len, models[t].values())), t == TRAINER_BASE))
    elif trainer not in models:
        raise InputError(f"--trainer {trainer} has no finished fold under {ws.results_dataset} "
                         f"(finished: {', '.join(sorted(models))}); pick one of those.")
    per_config = models[trainer]
    configurations = tuple(c for c in CONFIGURATIONS if c in per_config)
    folds = tuple(sorted(set.intersection(*(per_config[c] for c in configurations))))
    warnings = [f"stale folds left out: {', '.join(stale)}"] if stale else []
    if training:
        warnings.append(f"folds being trained left out: {', '.join(training)}; run `ibsr-nnunet ensemble` again "
                        f"when they finish")
    if len(configurations) > 1 and not folds:
        raise InputError(f"{trainer}: 2d has folds {sorted(per_config['2d'])} and 3d_fullres has folds "
                         f"{sorted(per_config['3d_fullres'])} finished, none in common; train a common fold.")
    missing = [c for c in CONFIGURATIONS if c not in per_config]
    if missing:
        warnings.append(f"{', '.join(missing)} has no finished fold of {trainer}: no 2d+3d_fullres ensemble, "
                        f"only {configurations[0]} is searched and predicted.")
    for c in configurations:
        if per_config[c] != set(folds):
            warnings.append(f"{c} folds {sorted(per_config[c] - set(folds))} are not finished in every "
                            f"configuration and are left out, so both are compared on the same cases.")
    if len(folds) < N_FOLDS:
        warnings.append(f"only folds {', '.join(map(str, folds))} of {N_FOLDS} are finished: the best-configuration "
                        f"search sees {len(folds)}/{N_FOLDS} of the cross-validation and the models average "
                        f"{len(folds)} fold(s); train the rest for the real thing.")
    return Selection(trainer, configurations, folds, warnings)


@dataclass
class EnsembleResult:
    selection: Selection
    results: dict[str, float]  # model name -> cross-validation foreground-mean Dice (before postprocessing)
    winner: str  # model name
    reason: str
    predictions: dict[str, Path]  # model name -> folder of <case>.nii.gz
    record: Path
    seconds: float


def model_record(model: str, trainer: str, *, configurations: tuple[str, ...], folds: tuple[int, ...],
                 postprocessing_pkl: Path, crossval_dice: float, axcodes: tuple[str, ...]) -> PredictionRecord:
    """What `segment` needs to predict like this model did: its folds, configurations, postprocessing, and the
    orientation (axis codes) of the images it was trained on."""
    return PredictionRecord(model, trainer, tuple(configurations), tuple(folds), postprocessing_pkl,
                            tuple(postprocessing_summary(postprocessing_pkl)), crossval_dice, tuple(axcodes))


def in_training_orientation(images: list[Path], target: tuple[str, ...], folder: Path) -> dict[Path, Path]:
    """Each image as nnU-Net should see it: itself when its axes already point as the training images' do, else a
    copy in `folder` with its axes permuted and flipped to them (no resampling; every voxel keeps its place)."""
    staged = {}
    for image in images:
        loaded = nib.load(str(image))
        reorientation = towards(loaded.affine, target)
        if reorientation.identity:
            staged[image] = image
            continue
        array = reorientation.apply(np.asanyarray(loaded.dataobj))
        folder.mkdir(parents=True, exist_ok=True)
        staged[image] = folder / image.name
        nib.save(nib.Nifti1Image(array, reorientation.affine(loaded.affine, loaded.shape), header=loaded.header),
                 str(staged[image]))
    return staged


def back_to_input_grid(labels: Path, image: Path, target: tuple[str, ...]) -> None:
    """Rewrite a label map predicted on `image`'s reoriented copy onto `image`'s own grid, voxel for voxel."""
    loaded = nib.load(str(image))
    reorientation = towards(loaded.affine, target)
    if reorientation.identity:
        return
    predicted = np.asanyarray(nib.load(str(labels)).dataobj)
    header = loaded.header.copy()
    header.set_data_dtype(np.uint8)
    nib.save(nib.Nifti1Image(reorientation.undo(predicted).astype(np.uint8), loaded.affine, header=header),
             str(labels))


def run(ws: Workspace, trainer: Optional[str] = None, *, jobs: int = 1, device: str = "auto",
        say: Callable[[str], None] = print) -> EnsembleResult:
    """Search the best configuration, predict imagesTs with 2d, 3d_fullres and their ensemble, postprocess, record."""
    started = time.perf_counter()
    images = ws.raw_dataset / "imagesTs"
    if not images.is_dir() or not any(images.glob("*_0000.nii.gz")):
        raise InputError(f"{images} holds no held-out or test images; run `ibsr-nnunet convert` first.")
    selection = select(ws, trainer)
    read_plans(ws)  # nnU-Net's search reads them: refused here in one sentence when cut short
    for warning in selection.warnings:
        say(f"warning: {warning}")
    fingerprint = dataset_fingerprint(ws)
    keys = (*selection.configurations, *(("ensemble",) if len(selection.configurations) > 1 else ()))
    ws.predictions.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:  # one writer per prediction set
        for key in keys:
            held.enter_context(Lock(lock_path(ws.predictions / MODEL_NAMES[key]), f"prediction set {MODEL_NAMES[key]}",
                                    "ibsr-nnunet ensemble", say=say))
        archive_stale_search(ws, fingerprint, [ws.predictions / MODEL_NAMES[key] for key in keys], say=say)
        search, predictions = _predict_all(ws, selection, images, fingerprint, jobs=jobs, device=device, say=say)
    results = {MODEL_NAMES[k]: v for k, v in search["results"].items()}
    winner = MODEL_NAMES[search["winner"]]
    ranked = ", ".join(f"{m} {d:.4f}" for m, d in sorted(results.items(), key=lambda kv: -kv[1]))
    reason = (f"{winner} has the highest cross-validation foreground-mean Dice on folds "
              f"{', '.join(map(str, selection.folds))} ({ranked}; nnU-Net keeps the simpler model on a tie); "
              f"{search['post_pp']:.4f} after its postprocessing")
    record_file = best_configuration_file(ws)
    write_json(record_file, {  # read back only for its dataset_fingerprint (archive_stale_search)
        "winner": winner, "reason": reason, "crossval_dice": results, "crossval_dice_post_pp": search["post_pp"],
        "trainer": selection.trainer, "configurations": list(selection.configurations),
        "folds": list(selection.folds), "warnings": selection.warnings,
        "predictions": {m: str(p) for m, p in predictions.items()}, "dataset_fingerprint": fingerprint,
    })
    return EnsembleResult(selection, results, winner, reason, predictions, record_file, time.perf_counter() - started)


def best_configuration_file(ws: Workspace) -> Path:
    """Our record of the search: winner, reason, each model's cross-validation Dice before and after
    postprocessing, trainer, configurations, folds, warnings, prediction folders, dataset_fingerprint."""
    return ws.root / BEST_CONFIGURATION_FILE


def search_outputs(ws: Workspace) -> list[Path]:
    """What nnU-Net's best-configuration search and our record of it write: rewritten by every `ensemble`."""
    results = ws.results_dataset
    return [best_configuration_file(ws), results / "ensembles", *sorted(results.glob("*/crossval_results_folds_*")),
            *(results / name for name in ("inference_information.json", "inference_instructions.txt",
                                          "ibsr_ensemble.log"))]


def archive_stale_search(ws: Workspace, fingerprint: str, prediction_sets: list[Path],
                           say: Callable[[str], None]) -> None:
    """Move the search's outputs and the prediction sets this run rewrites to the archive when they were made from
    another dataset (a missing or unreadable record counts as another)."""
    saved = read_json_or_none(best_configuration_file(ws))
    made_from = saved.get(KEY) if isinstance(saved, dict) else None
    if made_from != fingerprint:
        archive_stale_outputs(ws, search_outputs(ws), what="the best-configuration search",
                              why=f"made from dataset {short(made_from)}, the workspace now holds {short(fingerprint)}",
                              say=say)
    for folder in prediction_sets:
        why = staleness(folder, fingerprint)
        if why:
            archive_stale_outputs(ws, [folder], what=f"prediction set {folder.name}", why=why, say=say)


def _predict_all(ws: Workspace, selection: Selection, images: Path, fingerprint: str, *, jobs: int, device: str,
                 say: Callable[[str], None]) -> tuple[dict, dict[str, Path]]:
    """nnU-Net's search, then every model's postprocessed predictions, built in a scratch folder and swapped in."""
    log = ws.results_dataset / "ibsr_ensemble.log"
    scratch = ws.predictions / f".tmp-ensemble-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir()
    try:
        say(f"best-configuration search over {', '.join(selection.configurations)} "
            f"({selection.trainer}, folds {', '.join(map(str, selection.folds))})")
        search = find_best_configuration(ws, selection.trainer, selection.configurations, folds=selection.folds,
                                         jobs=jobs, log=log)
        # the weights each set is predicted with: a set whose folds are retrained later is known to be stale
        weights = {c: weights_signature(ws, [fold_folder(ws, c, f, trainer=selection.trainer) / "checkpoint_final.pth"
                                             for f in selection.folds]) for c in selection.configurations}
        raw: dict[str, Path] = {}
        plans_json = model_folder(ws, selection.configurations[0], selection.trainer) / "plans.json"
        axcodes = read_manifest(ws).training_axcodes
        inputs = in_training_orientation(sorted(images.glob("*_0000.nii.gz")), axcodes, scratch / "oriented")
        for configuration in selection.configurations:
            say(f"predicting {images.name} with {configuration}")
            raw[configuration] = scratch / f"raw-{configuration}"
            predict(ws, configuration, selection.trainer, folds=selection.folds, images=list(inputs.values()),
                    out=raw[configuration], device=device, log=log, probabilities=len(selection.configurations) > 1)
        if len(selection.configurations) > 1:
            say("ensembling " + " + ".join(selection.configurations))
            raw["ensemble"] = scratch / "raw-ensemble"
            ensemble_folders([raw[c] for c in selection.configurations], raw["ensemble"], plans_json=plans_json,
                             jobs=jobs, log=log)

        predictions = {}
        for key, folder in raw.items():
            model = MODEL_NAMES[key]
            pkl = search["sources"][key] / "postprocessing.pkl"
            built = scratch / model
            apply_postprocessing(pkl, folder, built, plans_json=plans_json, jobs=jobs, log=log)
            for extra in built.iterdir():  # nnU-Net's json copies: the folder holds our labels only
                if not extra.name.endswith(".nii.gz"):
                    extra.unlink()
            for image in inputs:
                back_to_input_grid(built / image.name.replace("_0000.nii.gz", ".nii.gz"), image, axcodes)
            configurations = selection.configurations if key == "ensemble" else (key,)
            write_prediction_record(built, model_record(
                model, selection.trainer, configurations=configurations, folds=selection.folds,
                postprocessing_pkl=pkl, crossval_dice=search["results"][key], axcodes=axcodes))
            record(built, fingerprint, model=model, trainer=selection.trainer, folds=list(selection.folds),
                   weights=[entry for c in configurations for entry in weights[c]])
            predictions[model] = ws.predictions / model
        for model, final in predictions.items():
            swap_in(scratch / model, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return search, predictions

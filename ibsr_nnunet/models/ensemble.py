"""The `ensemble` step: nnU-Net's best configuration, and each nnU-Net model's predictions for the held-out and test
cases, turned to the training orientation and back (core/oriented.py) around nnU-Net's one chain."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..core.atomic import swap_in
from ..core.errors import InputError
from ..core.locks import Lock, lock_path
from ..core.manifest import Manifest, read_manifest
from ..core.oriented import Prediction, predict_oriented
from ..core.provenance import weights_signature, write_provenance
from ..core.workspace import Workspace
from ..data.volumes import Volume, read_volume, write_volume
from ..nnunet.ensemble import (
    BestConfiguration,
    EnsembleResult,
    Selection,
    archive_stale_search,
    model_record,
    select,
    write_best_configuration,
)
from ..nnunet.paths import MODEL_NAMES, fold_folder
from ..nnunet.plans import read_plans
from ..nnunet.predict import find_best_configuration, predict_chain
from ..nnunet.prediction_record import write_prediction_record


def build_ensemble(ws: Workspace, trainer: Optional[str] = None, *, jobs: int = 1, device: str = "auto",
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
    manifest = read_manifest(ws)
    fingerprint = manifest.fingerprint
    keys = (*selection.configurations, *(("ensemble",) if len(selection.configurations) > 1 else ()))
    ws.predictions.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:  # one writer per prediction set
        for key in keys:
            held.enter_context(Lock(lock_path(ws.predictions / MODEL_NAMES[key]), f"prediction set {MODEL_NAMES[key]}",
                                    "ibsr-nnunet ensemble", say=say))
        archive_stale_search(ws, fingerprint, [ws.predictions / MODEL_NAMES[key] for key in keys], say=say)
        search, predictions = _predict_all(ws, selection, keys, images, manifest, jobs=jobs, device=device,
                                           say=say)
    results = {MODEL_NAMES[k]: v for k, v in search["results"].items()}
    winner = MODEL_NAMES[search["winner"]]
    ranked = ", ".join(f"{m} {d:.4f}" for m, d in sorted(results.items(), key=lambda kv: -kv[1]))
    reason = (f"{winner} has the highest cross-validation foreground-mean Dice on folds "
              f"{', '.join(map(str, selection.folds))} ({ranked}; nnU-Net keeps the simpler model on a tie); "
              f"{search['post_pp']:.4f} after its postprocessing")
    best_file = write_best_configuration(ws, BestConfiguration(
        winner=winner, reason=reason, crossval_dice={m: float(d) for m, d in results.items()},
        crossval_dice_post_pp=float(search["post_pp"]), trainer=selection.trainer,
        configurations=selection.configurations, folds=selection.folds, warnings=tuple(selection.warnings),
        predictions=predictions, dataset_fingerprint=fingerprint))
    return EnsembleResult(selection, results, winner, reason, predictions, best_file, time.perf_counter() - started)


def _predict_all(ws: Workspace, selection: Selection, keys: tuple[str, ...], images: Path, manifest: Manifest, *,
                 jobs: int, device: str, say: Callable[[str], None]) -> tuple[dict, dict[str, Path]]:
    """nnU-Net's search, then every model's postprocessed predictions on each image's own grid, built in a scratch
    folder and swapped in."""
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
        postprocessing = {key: search["sources"][key] / "postprocessing.pkl" for key in keys}
        axcodes, fingerprint = manifest.training_axcodes, manifest.fingerprint

        def chain(volumes: Iterator[tuple[str, Volume]]) -> Iterator[Prediction]:
            """The oriented volumes written for nnU-Net, the chain over them, one map per model stacked last."""
            oriented = scratch / "oriented"
            oriented.mkdir()
            cases: list[str] = []

            def written() -> Iterator[Path]:
                for case, volume in volumes:
                    write_volume(volume, oriented / f"{case}_0000.nii.gz")
                    cases.append(case)
                    yield oriented / f"{case}_0000.nii.gz"

            say(f"predicting {images.name} with {', '.join(selection.configurations)}"
                + (f", ensembling {' + '.join(selection.configurations)}" if "ensemble" in keys else ""))
            chained = predict_chain(ws, selection.trainer, selection.configurations, folds=selection.folds,
                                    images=written(), scratch=scratch, postprocessing=postprocessing, device=device,
                                    jobs=jobs, log=log)
            for case in cases:
                yield Prediction(case, np.stack([read_volume(chained[key].labels / f"{case}.nii.gz").array
                                                 .astype(np.uint8) for key in keys], axis=-1))

        built = {key: scratch / MODEL_NAMES[key] for key in keys}
        for folder in built.values():
            folder.mkdir()
        inputs = [(path.name.removesuffix("_0000.nii.gz"), partial(read_volume, path))
                  for path in sorted(images.glob("*_0000.nii.gz"))]
        for carried in predict_oriented(inputs, axcodes, chain):
            if carried.error is not None:
                raise carried.error
            for index, key in enumerate(keys):
                write_volume(carried.original.with_array(carried.prediction.labels[..., index]),
                             built[key] / f"{carried.key}.nii.gz")
        predictions = {}
        for key in keys:
            model = MODEL_NAMES[key]
            configurations = selection.configurations if key == "ensemble" else (key,)
            write_prediction_record(built[key], model_record(
                model, selection.trainer, configurations=configurations, folds=selection.folds,
                postprocessing_pkl=postprocessing[key], crossval_dice=search["results"][key], axcodes=axcodes))
            used = [entry for c in configurations for entry in weights[c]]
            write_provenance(built[key], fingerprint, model=model, trainer=selection.trainer,
                             folds=list(selection.folds), weights=used)
            predictions[model] = ws.predictions / model
        for key, model in ((key, MODEL_NAMES[key]) for key in keys):
            swap_in(built[key], predictions[model])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return search, predictions

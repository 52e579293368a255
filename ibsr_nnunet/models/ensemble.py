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
from ..core.vocabulary import NNUNET_CROSS_ENSEMBLE, nnunet_model_name
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
from ..nnunet.plans import read_plans
from ..nnunet.predict import Search, find_best_configuration, predict_chain
from ..nnunet.prediction_record import write_prediction_record
from ..nnunet.presets import Preset


def build_ensemble(ws: Workspace, trainer: Optional[str] = None, *, presets: Optional[tuple[Preset, ...]] = None,
                   jobs: int = 1, device: str = "auto", say: Callable[[str], None] = print) -> EnsembleResult:
    """Search the best configuration over every preset × configuration with finished folds (or those of
    `presets`), predict imagesTs with each of them and the search's ensembles, postprocess, record."""
    started = time.perf_counter()
    images = ws.raw_dataset / "imagesTs"
    if not images.is_dir() or not any(images.glob("*_0000.nii.gz")):
        raise InputError(f"{images} holds no held-out or test images; run `ibsr-nnunet convert` first.")
    selection = select(ws, trainer, presets)
    for preset in selection.presets:
        read_plans(ws, preset)  # nnU-Net's search reads them: refused here in one sentence when cut short
    for warning in selection.warnings:
        say(f"warning: {warning}")
    manifest = read_manifest(ws)
    fingerprint = manifest.fingerprint
    # every set this run may write: its members' and every ensemble the search can keep
    possible = [m.name for m in selection.members] + [nnunet_model_name("ensemble", p.name)
                                                      for p in selection.presets] + [NNUNET_CROSS_ENSEMBLE]
    ws.predictions.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:  # one writer per prediction set
        for model in possible:
            held.enter_context(Lock(lock_path(ws.predictions / model), f"prediction set {model}",
                                    "ibsr-nnunet ensemble", say=say))
        archive_stale_search(ws, fingerprint, [ws.predictions / model for model in possible], say=say)
        search, predictions = _predict_all(ws, selection, images, manifest, jobs=jobs, device=device, say=say)
    results = search.results
    ranked = ", ".join(f"{m} {d:.4f}" for m, d in sorted(results.items(), key=lambda kv: -kv[1]))
    reason = (f"{search.winner} has the highest cross-validation foreground-mean Dice on folds "
              f"{', '.join(map(str, selection.folds))} ({ranked}; nnU-Net keeps the simpler model on a tie); "
              f"{search.post_pp:.4f} after its postprocessing")
    best_file = write_best_configuration(ws, BestConfiguration(
        winner=search.winner, reason=reason, crossval_dice=dict(results), crossval_dice_post_pp=search.post_pp,
        trainer=selection.trainer, configurations=selection.configurations, folds=selection.folds,
        warnings=tuple(selection.warnings), predictions=predictions, dataset_fingerprint=fingerprint,
        models=tuple(m.name for m in selection.members)))
    return EnsembleResult(selection, results, search.winner, reason, predictions, best_file,
                          time.perf_counter() - started)


def _predict_all(ws: Workspace, selection: Selection, images: Path, manifest: Manifest, *, jobs: int, device: str,
                 say: Callable[[str], None]) -> tuple[Search, dict[str, Path]]:
    """nnU-Net's search, then every model's postprocessed predictions on each image's own grid, built in a scratch
    folder and swapped in."""
    log = ws.results_dataset / "ibsr_ensemble.log"
    scratch = ws.predictions / f".tmp-ensemble-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir()
    try:
        say(f"best-configuration search over {selection.described()} "
            f"({selection.trainer}, folds {', '.join(map(str, selection.folds))})")
        search = find_best_configuration(ws, selection.trainer, selection.members, folds=selection.folds,
                                         jobs=jobs, log=log)
        members = {m.name: m for m in selection.members}
        parts = {**{name: (m,) for name, m in members.items()}, **search.ensembles}
        models = tuple(search.results)  # members, then ensembles
        # the weights each set is predicted with: a set whose folds are retrained later is known to be stale
        weights = {m.name: weights_signature(ws, [m.fold(ws, selection.trainer, f) / "checkpoint_final.pth"
                                                  for f in selection.folds]) for m in selection.members}
        postprocessing = {model: search.sources[model] / "postprocessing.pkl" for model in models}
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

            averaged = [f"{' + '.join(m.label for m in ms)}" for ms in search.ensembles.values()]
            say(f"predicting {images.name} with {selection.described()}"
                + (f", ensembling {'; '.join(averaged)}" if averaged else ""))
            chained = predict_chain(ws, selection.trainer, selection.members, folds=selection.folds,
                                    images=written(), scratch=scratch, postprocessing=postprocessing, device=device,
                                    jobs=jobs, log=log, ensembles=search.ensembles)
            for case in cases:
                yield Prediction(case, np.stack([read_volume(chained[model].labels / f"{case}.nii.gz").array
                                                 .astype(np.uint8) for model in models], axis=-1))

        built = {model: scratch / model for model in models}
        for folder in built.values():
            folder.mkdir()
        inputs = [(path.name.removesuffix("_0000.nii.gz"), partial(read_volume, path))
                  for path in sorted(images.glob("*_0000.nii.gz"))]
        for carried in predict_oriented(inputs, axcodes, chain):
            if carried.error is not None:
                raise carried.error
            for index, model in enumerate(models):
                write_volume(carried.original.with_array(carried.prediction.labels[..., index]),
                             built[model] / f"{carried.key}.nii.gz")
        predictions = {}
        for model in models:
            write_prediction_record(built[model], model_record(
                model, selection.trainer, members=parts[model], folds=selection.folds,
                postprocessing_pkl=postprocessing[model], crossval_dice=search.results[model], axcodes=axcodes))
            used = [entry for m in parts[model] for entry in weights[m.name]]
            write_provenance(built[model], fingerprint, model=model, trainer=selection.trainer,
                             folds=list(selection.folds), weights=used)
            predictions[model] = ws.predictions / model
        for model in models:
            swap_in(built[model], predictions[model])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return search, predictions

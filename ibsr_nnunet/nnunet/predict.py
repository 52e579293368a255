"""nnU-Net's best-configuration search, prediction, softmax ensembling and connected-component postprocessing, and
the one chain of them every command predicts with."""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

from ..core.workspace import Workspace
from .environment import quiet_fork_pools, resolve_device
from .paths import PLANS, model_folder


def find_best_configuration(ws: Workspace, name: str, configurations: tuple[str, ...], *, folds: tuple[int, ...],
                            jobs: int, log: Path) -> dict:
    """nnU-Net's own search over `configurations` (and their ensemble) on the cross-validation of `folds`.

    Also determines each candidate's postprocessing (nnU-Net does it for the winner only), so every model we
    predict with gets its own. Returns {"results": {candidate: Dice}, "winner": candidate, "post_pp": Dice,
    "sources": {candidate: cross-validation folder holding postprocessing.pkl}}.
    """
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration as search
    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    models = [{"plans": PLANS, "configuration": c, "trainer": name} for c in configurations]
    folds_tag = "_".join(map(str, folds))
    sources = {c: model_folder(ws, c, name) / f"crossval_results_folds_{folds_tag}" for c in configurations}
    with quiet_fork_pools(log):
        info = search(ws.dataset_id, models, allow_ensembling=len(models) > 1, num_processes=max(1, jobs),
                      overwrite=True, folds=folds)
        if len(configurations) > 1:
            ensembles = ws.results_dataset / "ensembles"
            [sources["ensemble"]] = [p for p in ensembles.iterdir() if p.name.endswith(f"___{folds_tag}")
                                     and all(f"{name}__{PLANS}__{c}" in p.name for c in configurations)]
        for source in sources.values():
            if not (source / "postprocessing.pkl").is_file():
                determine_postprocessing(str(source), str(ws.preprocessed_dataset / "gt_segmentations"),
                                         plans_file_or_dict=str(source / "plans.json"),
                                         dataset_json_file_or_dict=str(source / "dataset.json"),
                                         num_processes=max(1, jobs), keep_postprocessed_files=False)
    chosen = info["best_model_or_ensemble"]
    winners = [m["configuration"] for m in chosen["selected_model_or_models"]]
    results = {}
    for key, dice in info["all_results"].items():
        results["ensemble" if key.startswith("ensemble___") else key.rsplit("__", 1)[-1]] = dice
    return {"results": results, "winner": "ensemble" if len(winners) > 1 else winners[0],
            "post_pp": chosen["result_on_crossval_post_pp"], "sources": sources}


def predict(ws: Workspace, configuration: str, name: str, *, folds: tuple[int, ...], images: Iterable[Path],
            out: Path, device: str, log: Path, on_image: Optional[Callable[[Path, float], None]] = None,
            probabilities: bool = True, tta: bool = True, step_size: float = 0.5) -> None:
    """Predict each image (any file name) into out/<name without _0000 and extension>, with probabilities
    (.npz, what ensembling and soft volumes need) unless `probabilities` is False. `images` may be a generator:
    each image is predicted as soon as it is there. tta: nnU-Net's test-time mirroring (4 passes in 2d, 8 in
    3d_fullres); step_size: the sliding window's step as a fraction of the patch (nnU-Net's default 0.5).

    One predictor for all images: the folds' weights are loaded once. `on_image(image, seconds)` after each.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch_device = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation inside nnU-Net's network import
        predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=tta,
                                    device=torch_device, verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_folder(ws, configuration, name)), use_folds=folds,
                                                       checkpoint_name="checkpoint_final.pth")
        for image in images:
            started = time.perf_counter()
            case = re.sub(r"(_0000)?\.nii(\.gz)?$", "", image.name)
            # sequential: no spawn pool re-importing torch per worker, no orphans when a job is killed
            predictor.predict_from_files_sequential([[str(image)]], [str(out / case)],
                                                    save_probabilities=probabilities, overwrite=True)
            if on_image:
                on_image(image, time.perf_counter() - started)


def ensemble_folders(folders: list[Path], out: Path, *, plans_json: Path, jobs: int, log: Path,
                     probabilities: bool = False) -> None:
    """nnU-Net's softmax averaging of prediction folders that hold probabilities (written too with
    `probabilities`)."""
    from nnunetv2.ensembling.ensemble import ensemble_folders as average

    with quiet_fork_pools(log):
        average([str(f) for f in folders], str(out), save_merged_probabilities=probabilities,
                num_processes=max(1, jobs),
                dataset_json_file_or_dict=str(plans_json.parent / "dataset.json"),
                plans_json_file_or_dict=str(plans_json))


def apply_postprocessing(postprocessing_pkl: Path, folder: Path, out: Path, *, plans_json: Path, jobs: int,
                         log: Path) -> None:
    """Apply nnU-Net's chosen per-class connected-component postprocessing to a folder of predictions."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    functions, arguments = load_pickle(str(postprocessing_pkl))
    with quiet_fork_pools(log):
        apply_postprocessing_to_folder(str(folder), str(out), functions, arguments,
                                       plans_file_or_dict=str(plans_json),
                                       dataset_json_file_or_dict=str(plans_json.parent / "dataset.json"),
                                       num_processes=max(1, jobs))


def postprocessing_summary(postprocessing_pkl: Path) -> list[str]:
    """Each postprocessing step as `function(labels)`,
    e.g. 'remove_all_but_largest_component_from_segmentation([3])'."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    functions, arguments = load_pickle(str(postprocessing_pkl))
    steps = []
    for function, kwargs in zip(functions, arguments):
        target = kwargs.get("labels_or_regions")
        steps.append(f"{getattr(function, '__name__', function)}({target})")
    return steps


@dataclass(frozen=True)
class Chained:
    """One output of the chain: the folder of postprocessed label maps <case>.nii.gz, and the folder of the softmax
    before postprocessing (<case>.npz, written when asked for)."""

    labels: Path
    probabilities: Path


def predict_chain(ws: Workspace, trainer: str, configurations: tuple[str, ...], *, folds: tuple[int, ...],
                  images: Iterable[Path], scratch: Path, postprocessing: Mapping[str, Path], device: str, jobs: int,
                  log: Path, on_image: Optional[Callable[[Path, float], None]] = None, probabilities: bool = False,
                  tta: bool = True, step_size: float = 0.5) -> dict[str, Chained]:
    """nnU-Net's predict -> ensemble -> postprocess: every configuration over `images` (a generator is predicted by
    the first configuration as it comes), their softmax average when "ensemble" is an output, then each output of
    `postprocessing` (a configuration or "ensemble" -> its postprocessing.pkl) postprocessed into scratch/<output>.
    `probabilities` keeps each output's softmax before postprocessing."""
    seen: list[Path] = []

    def collected() -> Iterable[Path]:
        for image in images:
            seen.append(image)
            yield image

    ensembled = "ensemble" in postprocessing
    raw: dict[str, Path] = {}
    for index, configuration in enumerate(configurations):
        raw[configuration] = scratch / f"raw-{configuration}"
        predict(ws, configuration, trainer, folds=folds, images=collected() if index == 0 else list(seen),
                out=raw[configuration], device=device, log=log, on_image=on_image,
                probabilities=ensembled or probabilities, tta=tta, step_size=step_size)
    plans_json = model_folder(ws, configurations[0], trainer) / "plans.json"
    if ensembled:
        raw["ensemble"] = scratch / "raw-ensemble"
        ensemble_folders([raw[c] for c in configurations], raw["ensemble"], plans_json=plans_json, jobs=jobs, log=log,
                         probabilities=probabilities)
    chained = {}
    for output, pkl in postprocessing.items():
        labels = scratch / output
        apply_postprocessing(pkl, raw[output], labels, plans_json=plans_json, jobs=jobs, log=log)
        chained[output] = Chained(labels, raw[output])
    return chained

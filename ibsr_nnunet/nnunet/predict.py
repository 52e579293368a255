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

from ..core.vocabulary import NNUNET_CROSS_ENSEMBLE, nnunet_model_name
from ..core.workspace import Workspace
from .environment import quiet_fork_pools, resolve_device
from .paths import Member


@dataclass(frozen=True)
class Search:
    """nnU-Net's best-configuration search, in our model names."""

    results: dict[str, float]  # model -> cross-validation foreground-mean Dice before postprocessing
    winner: str  # the model (or ensemble) with the highest
    post_pp: float  # the winner's Dice after its postprocessing
    sources: dict[str, Path]  # model -> the cross-validation folder holding its postprocessing.pkl
    ensembles: dict[str, tuple[Member, Member]]  # each ensemble model -> its two members


def find_best_configuration(ws: Workspace, name: str, members: tuple[Member, ...], *, folds: tuple[int, ...],
                            jobs: int, log: Path) -> Search:
    """nnU-Net's own search over `members` (of one trainer, any presets) and every two-model ensemble of them, on
    the cross-validation of `folds`.

    The models kept: every member, each preset's 2d + 3d_fullres ensemble (nnunet_ensemble, nnunet_resencm_ensemble,
    ...), and the best two-model ensemble when its members come from two presets (nnunet_cross_preset_ensemble).
    Each gets its own postprocessing (nnU-Net determines it for the winner only)."""
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration as search
    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    models = [{"plans": m.plans, "configuration": m.configuration, "trainer": name} for m in members]
    folds_tag = "_".join(map(str, folds))
    by_key = {m.folder(ws, name).name: m.name for m in members}
    sources = {m.name: m.folder(ws, name) / f"crossval_results_folds_{folds_tag}" for m in members}
    pairs: dict[str, tuple[Member, Member]] = {}
    for i, first in enumerate(members):
        for second in members[i + 1:]:
            pairs[f"ensemble___{first.folder(ws, name).name}___{second.folder(ws, name).name}___{folds_tag}"] = (
                first, second)
    with quiet_fork_pools(log):
        info = search(ws.dataset_id, models, allow_ensembling=len(models) > 1, num_processes=max(1, jobs),
                      overwrite=True, folds=folds)
        scores = info["all_results"]
        ensembles: dict[str, tuple[Member, Member]] = {}
        for key, (first, second) in pairs.items():
            if first.preset == second.preset and first.configuration != second.configuration:
                by_key[key] = nnunet_model_name("ensemble", first.preset.name)
                ensembles[by_key[key]] = (first, second)
        if pairs:  # the best ensemble of all is kept too, whatever its members
            best = max(pairs, key=lambda key: scores[key])  # the first of a tie, as nnU-Net
            if best not in by_key:
                by_key[best] = NNUNET_CROSS_ENSEMBLE
                ensembles[NNUNET_CROSS_ENSEMBLE] = pairs[best]
        for key, model in by_key.items():
            if key in pairs:
                sources[model] = ws.results_dataset / "ensembles" / key
        for source in sources.values():
            if not (source / "postprocessing.pkl").is_file():
                determine_postprocessing(str(source), str(ws.preprocessed_dataset / "gt_segmentations"),
                                         plans_file_or_dict=str(source / "plans.json"),
                                         dataset_json_file_or_dict=str(source / "dataset.json"),
                                         num_processes=max(1, jobs), keep_postprocessed_files=False)
    chosen = info["best_model_or_ensemble"]
    best_key = max(scores, key=lambda key: scores[key])  # nnU-Net's: the first of a tie, single models first
    return Search({model: float(scores[key]) for key, model in by_key.items()}, by_key[best_key],
                  float(chosen["result_on_crossval_post_pp"]), sources, ensembles)


def predict(ws: Workspace, member: Member, name: str, *, folds: tuple[int, ...], images: Iterable[Path],
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
        predictor.initialize_from_trained_model_folder(str(member.folder(ws, name)), use_folds=folds,
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


def predict_chain(ws: Workspace, trainer: str, members: tuple[Member, ...], *, folds: tuple[int, ...],
                  images: Iterable[Path], scratch: Path, postprocessing: Mapping[str, Path], device: str, jobs: int,
                  log: Path, ensembles: Optional[Mapping[str, tuple[Member, ...]]] = None,
                  on_image: Optional[Callable[[Path, float], None]] = None, probabilities: bool = False,
                  tta: bool = True, step_size: float = 0.5) -> dict[str, Chained]:
    """nnU-Net's predict -> ensemble -> postprocess: every member over `images` (a generator is predicted by the
    first member as it comes), the softmax average of each of `ensembles` (ensemble model -> its members) that is
    an output, then each output of `postprocessing` (a member's or ensemble's model name -> its postprocessing.pkl)
    postprocessed into scratch/<output>. `probabilities` keeps each output's softmax before postprocessing."""
    seen: list[Path] = []
    ensembles = {model: parts for model, parts in (ensembles or {}).items() if model in postprocessing}

    def collected() -> Iterable[Path]:
        for image in images:
            seen.append(image)
            yield image

    averaged = {m for parts in ensembles.values() for m in parts}
    raw: dict[str, Path] = {}
    for index, member in enumerate(members):
        raw[member.name] = scratch / f"raw-{member.name}"
        predict(ws, member, trainer, folds=folds, images=collected() if index == 0 else list(seen),
                out=raw[member.name], device=device, log=log, on_image=on_image,
                probabilities=member in averaged or probabilities, tta=tta, step_size=step_size)
    plans_json = members[0].folder(ws, trainer) / "plans.json"  # for label handling only: any member's will do
    for model, parts in ensembles.items():
        raw[model] = scratch / f"raw-{model}"
        ensemble_folders([raw[m.name] for m in parts], raw[model], plans_json=plans_json, jobs=jobs, log=log,
                         probabilities=probabilities)
    chained = {}
    for output, pkl in postprocessing.items():
        labels = scratch / output
        apply_postprocessing(pkl, raw[output], labels, plans_json=plans_json, jobs=jobs, log=log)
        chained[output] = Chained(labels, raw[output])
    return chained

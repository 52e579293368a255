"""The one door to nnU-Net v2: every import of nnunetv2 in this project happens in this module.

nnunetv2 (and torch, ~3 s) are imported inside the functions, so importing this module stays cheap. The trainer
subclasses are built here on first use; `ibsr_nnunet/ext_trainers/` only points nnU-Net's own CLI at them.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import sys
import time
import multiprocessing
import os
import threading
import types
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

from .atomic import fsync_dir, write_json
from .devices import torch_device
from .errors import InputError
from .exitcodes import EXIT_REQUEUE

# `train` exits with this code when a signal interrupted it after a checkpoint was saved: "requeue me".
FULL_EPOCHS, FULL_ITERATIONS = 1000, 250
TRAINER_BASE = "IbsrTrainer"
SHORT_TRAINER = re.compile(rf"^{TRAINER_BASE}_(\d+)ep_(\d+)it$")
CONFIGURATIONS = ("2d", "3d_fullres")
EXT_TRAINER_FOLDER = Path(__file__).parent / "ext_trainers"


def configure_worker_counts(cores: int) -> None:
    """nnU-Net's process counts from the cores we have (its defaults assume 8-12); a user's own values win."""
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, cores)))
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, cores)))


def _import_integrity_check() -> types.ModuleType:
    import nnunetv2.experiment_planning.verify_dataset_integrity as integrity

    return integrity


def preload_in_background() -> threading.Thread:
    """Import nnU-Net (~3 s of torch) on a thread, overlapping work that runs in already-started processes."""
    thread = threading.Thread(target=_import_integrity_check, name="import-nnunetv2", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _fork_pools(module: types.ModuleType):
    """nnU-Net opens a *spawn* pool whose workers each re-import torch (~3 s apiece); fork workers inherit it."""
    fork_only = types.SimpleNamespace(get_context=lambda method=None: multiprocessing.get_context("fork"))
    original = module.multiprocessing
    module.multiprocessing = fork_only
    try:
        yield
    finally:
        module.multiprocessing = original


def verify_dataset(folder: Path, processes: int) -> None:
    """nnU-Net's own integrity check on a raw dataset folder; its failure becomes one InputError."""
    integrity = _import_integrity_check()
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), _fork_pools(integrity):
            integrity.verify_dataset_integrity(str(folder), max(1, processes))
    except (AssertionError, RuntimeError, FileNotFoundError, ValueError) as err:
        details = " ".join(f"{err} {chatter.getvalue()}".split())[:600]
        raise InputError(
            f"{folder.name}: nnU-Net's dataset integrity check failed ({details}); nothing was written, "
            f"fix the source files it names and convert again."
        ) from None


# ---- environment ------------------------------------------------------------------------------------------------

def configure(ws, cores: int) -> None:
    """nnU-Net's paths from the workspace, its worker counts from our cores, and where to find our trainers."""
    ws.export_env()
    configure_worker_counts(cores)
    existing = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(EXT_TRAINER_FOLDER) not in existing:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*existing, str(EXT_TRAINER_FOLDER)])


# ---- plan -------------------------------------------------------------------------------------------------------

@dataclass
class PlanResult:
    configurations: dict[str, dict]  # name -> patch size, batch size, spacing, stages, median shape
    dropped: list[str]  # configurations nnU-Net decided not to make (3d_lowres for IBSR-sized images)
    up_to_date: bool


def _plan_stamp(ws) -> Path:
    return ws.preprocessed_dataset / "ibsr_plan.json"


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


def plan(ws, configurations: tuple[str, ...] = CONFIGURATIONS, jobs: int = 1, force: bool = False) -> PlanResult:
    """nnU-Net fingerprint, plans and preprocessing (with its integrity check); skipped when already done for
    exactly this raw dataset and these configurations."""
    if not ws.manifest.is_file():
        raise InputError(f"{ws.raw_dataset}: no converted dataset in this workspace; run `ibsr-nnunet convert SOURCE` first.")
    unknown = [c for c in configurations if c not in (*CONFIGURATIONS, "3d_lowres")]
    if unknown:
        raise InputError(f"--configs {','.join(unknown)} unknown; use 2d, 3d_fullres (and 3d_lowres).")
    fingerprint = json.loads(ws.manifest.read_text())["fingerprint"]
    stamp = _plan_stamp(ws)
    plans_file = ws.preprocessed_dataset / "nnUNetPlans.json"
    wanted = {"raw_fingerprint": fingerprint, "configurations": sorted(configurations)}
    if not force and stamp.is_file() and plans_file.is_file():
        recorded = json.loads(stamp.read_text())
        if {k: recorded.get(k) for k in wanted} == wanted:
            plans = json.loads(plans_file.read_text())
            summary = _summarise_plans(plans)
            return PlanResult(summary, [c for c in configurations if c not in summary], up_to_date=True)

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                       preprocess)

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            extract_fingerprints([ws.dataset_id], num_processes=jobs, check_dataset_integrity=True, clean=True)
            plan_experiments([ws.dataset_id])
            plans = json.loads(plans_file.read_text())
            present = [c for c in configurations if c in plans["configurations"]]
            preprocess([ws.dataset_id], configurations=present, num_processes=[jobs] * len(present))
    except (AssertionError, RuntimeError) as err:
        details = " ".join(f"{err}".split())[:400]
        raise InputError(f"{ws.raw_dataset}: nnU-Net planning failed ({details}); fix the dataset and convert again.") from None
    summary = _summarise_plans(plans)
    write_json(stamp, {**wanted, "planned": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return PlanResult(summary, [c for c in configurations if c not in summary], up_to_date=False)


# ---- training ---------------------------------------------------------------------------------------------------

def trainer_name(epochs: int = FULL_EPOCHS, iterations: int = FULL_ITERATIONS) -> str:
    """Our trainer's name for a schedule; a short schedule says so in its name (and so in its results folder)."""
    if (epochs, iterations) == (FULL_EPOCHS, FULL_ITERATIONS):
        return TRAINER_BASE
    return f"{TRAINER_BASE}_{epochs}ep_{iterations}it"


class _Interrupt:
    """The first SIGUSR1/SIGTERM received by the training process (workers ignore them: the main process stops them)."""

    signum: Optional[int] = None
    main_pid: int = os.getpid()

    @classmethod
    def install(cls) -> None:
        cls.main_pid = os.getpid()
        for signum in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(signum, cls._handle)

    @classmethod
    def _handle(cls, signum, frame) -> None:
        if os.getpid() == cls.main_pid and cls.signum is None:
            cls.signum = signum
            print(f"received {signal.Signals(signum).name}: finishing this iteration, then saving a checkpoint",
                  file=sys.stderr, flush=True)


class TrainingInterrupted(SystemExit):
    """Raised after the checkpoint is safe: the process exits with EXIT_REQUEUE."""


@lru_cache(maxsize=None)
def trainer_class(name: str):
    """The nnUNetTrainer subclass called `name` (IbsrTrainer or IbsrTrainer_<E>ep_<I>it)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    match = SHORT_TRAINER.match(name)
    if name == TRAINER_BASE:
        epochs, iterations = FULL_EPOCHS, FULL_ITERATIONS
    elif match:
        epochs, iterations = int(match.group(1)), int(match.group(2))
    else:
        raise AttributeError(name)

    class Trainer(nnUNetTrainer):
        """nnU-Net's trainer, made durable: atomic checkpoints every epoch and a clean stop on SIGUSR1/SIGTERM."""

        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, round(iterations / 5))
            self.save_every = int(os.environ.get("IBSR_SAVE_EVERY", "1"))

        def save_checkpoint(self, filename: str) -> None:
            """Write to a temporary file, fsync, keep the previous good checkpoint, then rename into place."""
            if self.local_rank != 0:
                return
            started = time.perf_counter()
            target = Path(filename)
            partial = target.with_name(f".{target.name}.partial")
            super().save_checkpoint(str(partial))
            with open(partial, "rb+") as handle:
                os.fsync(handle.fileno())
            if target.name == "checkpoint_latest.pth" and target.exists():
                os.replace(target, target.with_name("checkpoint_previous.pth"))
            os.replace(partial, target)
            fsync_dir(target.parent)
            # the price of durability, in the log where bench/resume.py and users can see it
            self.print_to_log_file(f"{target.name} written in {time.perf_counter() - started:.3f} s")

        def train_step(self, batch: dict) -> dict:
            result = super().train_step(batch)
            if _Interrupt.signum is not None:
                # mid-epoch: store this epoch as not yet done, so the rerun repeats it (at most one epoch lost)
                self.current_epoch -= 1
                self._stop_for_requeue()
            return result

        def on_epoch_end(self):
            super().on_epoch_end()  # saves checkpoint_latest every `save_every` epochs, then counts the epoch
            if _Interrupt.signum is not None and self.current_epoch < self.num_epochs:
                self.current_epoch -= 1
                self._stop_for_requeue()

        def on_train_end(self):
            super().on_train_end()  # writes checkpoint_final.pth and deletes checkpoint_latest.pth
            Path(self.output_folder, "checkpoint_previous.pth").unlink(missing_ok=True)

        def _stop_for_requeue(self):
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
            self.current_epoch += 1
            for loader in (self.dataloader_train, self.dataloader_val):
                if hasattr(loader, "_finish"):
                    loader._finish()
            name = signal.Signals(_Interrupt.signum).name
            self.print_to_log_file(f"{name}: saved checkpoint_latest.pth at epoch {self.current_epoch}; "
                                   f"exiting with {EXIT_REQUEUE} (requeue me)")
            raise TrainingInterrupted(EXIT_REQUEUE)

    Trainer.__name__ = Trainer.__qualname__ = name
    Trainer.__module__ = "ibsr_trainers"
    return Trainer


@dataclass
class TrainResult:
    fold_folder: Path
    status: str  # "finished", "already finished"
    resumed_from: Optional[str]  # checkpoint file name, or None for a fresh start
    start_epoch: int
    notes: list[str]


def model_folder(ws, configuration: str, name: str) -> Path:
    """nnU-Net's results folder of one trainer and configuration (its plans are always nnUNetPlans here)."""
    return ws.results_dataset / f"{name}__nnUNetPlans__{configuration}"


def fold_folder(ws, configuration: str, fold: int, name: str) -> Path:
    return model_folder(ws, configuration, name) / f"fold_{fold}"


def fold_finished(folder: Path) -> bool:
    """Training ended (final checkpoint) and nnU-Net's validation was written (summary)."""
    return (folder / "checkpoint_final.pth").is_file() and (folder / "validation" / "summary.json").is_file()


def _readable_checkpoint(path: Path, device) -> Optional[str]:
    """None when `path` loads, else why not."""
    import torch

    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        checkpoint["current_epoch"], checkpoint["network_weights"]
        return None
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        return " ".join(str(err).split())[:160] or type(err).__name__


def resolve_device(device: str):
    """The torch device, with torch's CPU threads set to nnU-Net's process count when it is the CPU."""
    import torch

    resolved = torch_device(device)
    if resolved.type == "cpu":
        torch.set_num_threads(max(1, int(os.environ.get("nnUNet_def_n_proc", "1"))))
    return resolved


def train(ws, configuration: str, fold: int, epochs: int = FULL_EPOCHS, iterations: int = FULL_ITERATIONS,
          device: str = "auto", save_every: int = 1, say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume, or skip) one fold, then write nnU-Net's validation with probabilities (--npz)."""
    _Interrupt.install()  # first thing: a signal during start-up must not kill us before we can save
    if epochs < 1 or iterations < 1 or save_every < 1:
        raise InputError("--epochs, --iterations-per-epoch and --save-every must be at least 1.")
    plans_file = ws.preprocessed_dataset / "nnUNetPlans.json"
    if not plans_file.is_file():
        raise InputError(f"{plans_file}: no nnU-Net plans for this workspace; run `ibsr-nnunet plan` first.")
    plans = json.loads(plans_file.read_text())
    if configuration not in plans["configurations"]:
        raise InputError(f"--config {configuration} is not in {plans_file.name} "
                         f"(has {', '.join(plans['configurations'])}); pick one of those or re-plan.")
    splits = json.loads((ws.preprocessed_dataset / "splits_final.json").read_text())
    if not 0 <= fold < len(splits):
        raise InputError(f"--fold {fold} does not exist: splits_final.json has folds 0..{len(splits) - 1}.")
    name = trainer_name(epochs, iterations)
    folder = fold_folder(ws, configuration, fold, name)
    if fold_finished(folder):
        return TrainResult(folder, "already finished", None, epochs, [])

    os.environ["IBSR_SAVE_EVERY"] = str(save_every)
    torch_device = resolve_device(device)
    candidates = ["checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_previous.pth"]
    notes, resume_from = [], None
    for candidate in candidates:
        path = folder / candidate
        if not path.is_file():
            continue
        problem = _readable_checkpoint(path, torch_device)
        if problem is None:
            resume_from = candidate
            break
        notes.append(f"{candidate} is unreadable ({problem}); falling back to the previous checkpoint")
    for note in notes:
        say(note)

    dataset_json = json.loads((ws.preprocessed_dataset / "dataset.json").read_text())
    plans["continue_training"] = resume_from is not None
    trainer = trainer_class(name)(plans=plans, configuration=configuration, fold=fold,
                                  dataset_json=dataset_json, device=torch_device)
    if resume_from:
        trainer.load_checkpoint(str(folder / resume_from))
        say(f"resuming {name} {configuration} fold {fold} from {resume_from} at epoch {trainer.current_epoch}")
    start_epoch = trainer.current_epoch
    if resume_from != "checkpoint_final.pth":
        trainer.run_training()
    # `--npz`: probabilities for nnU-Net's best-configuration search and ensembling
    trainer.perform_actual_validation(save_probabilities=True)
    return TrainResult(folder, "finished", resume_from, start_epoch, notes)


# ---- best configuration, prediction, ensembling, postprocessing ---------------------------------------------------

@contextlib.contextmanager
def _quiet_fork_pools(log: Path):
    """nnU-Net's evaluation/ensembling/postprocessing: fork pools, and its chatter into `log` instead of our screen."""
    import nnunetv2.ensembling.ensemble as ensemble
    import nnunetv2.evaluation.evaluate_predictions as evaluate
    import nnunetv2.postprocessing.remove_connected_components as postprocessing

    with open(log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.ExitStack() as stack:
        for module in (ensemble, evaluate, postprocessing):
            stack.enter_context(_fork_pools(module))
        yield


def find_best_configuration(ws, name: str, configurations: tuple[str, ...], folds: tuple[int, ...], jobs: int,
                            log: Path) -> dict:
    """nnU-Net's own search over `configurations` (and their ensemble) on the cross-validation of `folds`.

    Also determines each candidate's postprocessing (nnU-Net does it for the winner only), so every model we
    predict with gets its own. Returns {"results": {candidate: Dice}, "winner": candidate, "post_pp": Dice,
    "sources": {candidate: cross-validation folder holding postprocessing.pkl}}.
    """
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration as search
    from nnunetv2.postprocessing.remove_connected_components import determine_postprocessing

    models = [{"plans": "nnUNetPlans", "configuration": c, "trainer": name} for c in configurations]
    folds_tag = "_".join(map(str, folds))
    sources = {c: model_folder(ws, c, name) / f"crossval_results_folds_{folds_tag}" for c in configurations}
    with _quiet_fork_pools(log):
        info = search(ws.dataset_id, models, allow_ensembling=len(models) > 1, num_processes=max(1, jobs),
                      overwrite=True, folds=folds)
        if len(configurations) > 1:
            ensembles = ws.results_dataset / "ensembles"
            [sources["ensemble"]] = [p for p in ensembles.iterdir() if p.name.endswith(f"___{folds_tag}")
                                     and all(f"{name}__nnUNetPlans__{c}" in p.name for c in configurations)]
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


def predict(ws, configuration: str, name: str, folds: tuple[int, ...], images: list[Path], out: Path, device: str,
            log: Path, on_image: Optional[Callable[[Path, float], None]] = None, probabilities: bool = True) -> None:
    """Predict each image (any file name) into out/<name without _0000 and extension>, with probabilities
    (.npz, what ensembling needs) unless `probabilities` is False.

    One predictor for all images: the folds' weights are loaded once. `on_image(image, seconds)` after each.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch_device = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation inside nnU-Net's network import
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
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


def ensemble_folders(folders: list[Path], out: Path, plans_json: Path, jobs: int, log: Path) -> None:
    """nnU-Net's softmax averaging of prediction folders that hold probabilities."""
    from nnunetv2.ensembling.ensemble import ensemble_folders as average

    with _quiet_fork_pools(log):
        average([str(f) for f in folders], str(out), save_merged_probabilities=False, num_processes=max(1, jobs),
                dataset_json_file_or_dict=str(plans_json.parent / "dataset.json"),
                plans_json_file_or_dict=str(plans_json))


def apply_postprocessing(postprocessing_pkl: Path, folder: Path, out: Path, plans_json: Path, jobs: int,
                         log: Path) -> None:
    """Apply nnU-Net's chosen per-class connected-component postprocessing to a folder of predictions."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    functions, arguments = load_pickle(str(postprocessing_pkl))
    with _quiet_fork_pools(log):
        apply_postprocessing_to_folder(str(folder), str(out), functions, arguments,
                                       plans_file_or_dict=str(plans_json),
                                       dataset_json_file_or_dict=str(plans_json.parent / "dataset.json"),
                                       num_processes=max(1, jobs))


def postprocessing_summary(postprocessing_pkl: Path) -> list[str]:
    """The postprocessing steps in words, e.g. 'keep the largest component of label 3'."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    functions, arguments = load_pickle(str(postprocessing_pkl))
    steps = []
    for function, kwargs in zip(functions, arguments):
        target = kwargs.get("labels_or_regions")
        steps.append(f"{getattr(function, '__name__', function)}({target})")
    return steps

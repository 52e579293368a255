"""nnU-Net's models: each preset's configurations and their ensembles, as `ensemble` recorded them in
predictions/<name>/model.json (trainer, plans and configurations, folds, postprocessing, training orientation)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.oriented import Prediction, confidence
from ..core.provenance import PROVENANCE_FILE
from ..core.runlog import Run, read_runs
from ..core.vocabulary import CONFIGURATIONS, N_FOLDS, NNUNET_MODEL_KEYS, NNUNET_MODELS
from ..core.workspace import Workspace
from ..data.volumes import Volume, read_volume, write_volume
from ..nnunet.fold import fold_epochs, fold_finished, fold_unready, log_epochs, log_seconds, logs, validation_dice
from ..nnunet.paths import MODEL_FOLDER, TRAINER_FILES, Member, trainer_schedule
from ..nnunet.predict import predict_chain
from ..nnunet.prediction_record import PredictionRecord, prediction_record_path, read_prediction_record
from ..nnunet.presets import BY_PLANS, PRESET_TABLE
from ..nnunet.validation import crossval_dice
from .protocol import RECENT_EPOCHS, PredictSettings, Progress, TrainedModel, TrainingJob, Validation, current_device
from .registry import register

CURVE = ("train_loss", "val_loss", "pseudo_dice")


@register
@dataclass(frozen=True)
class NnunetModel(TrainedModel):
    """nnunet_2d, nnunet_3d_fullres or nnunet_ensemble of the default plans, nnunet_resencm_2d and the like of
    another preset, or nnunet_cross_preset_ensemble: the folds of one trainer in one or two models (plans and
    configuration), softmax-averaged, postprocessed as nnU-Net chose."""

    kind = "nnunet"

    @classmethod
    def claims(cls, name: str) -> bool:
        return name in NNUNET_MODEL_KEYS

    @classmethod
    def examples(cls) -> tuple[str, ...]:
        return tuple(NNUNET_MODEL_KEYS)

    @classmethod
    def refusal_of_name(cls, name: str) -> str:
        return (f"is not an nnU-Net model; pass one of {', '.join(NNUNET_MODELS.values())} (default plans), or "
                f"nnunet_<preset>_2d|3d_fullres|ensemble with <preset> resencm, resencl or resencxl")

    @classmethod
    def trained_names(cls, ws: Workspace) -> list[str]:
        return sorted(name for name in NNUNET_MODEL_KEYS if prediction_record_path(ws.predictions / name).is_file())

    @property
    def folder(self) -> Path:
        return self.ws.predictions / self.name

    @property
    def remake(self) -> str:
        return "ibsr-nnunet ensemble"

    @property
    def retrain(self) -> str:
        return "ibsr-nnunet ensemble"

    def trained(self) -> bool:
        return prediction_record_path(self.folder).is_file()

    @cached_property
    def record(self) -> PredictionRecord:
        """model.json, refused unless every file it names (folds, postprocessing) lies inside this workspace's
        nnU-Net results: nnU-Net unpickles them."""
        results = self.ws.results_dataset.resolve()
        path = prediction_record_path(self.folder)
        try:
            info = read_prediction_record(self.folder)
            trainer_schedule(info.trainer)  # one of our trainers' names, so a folder name, never a path
            inside = (info.configurations and set(info.configurations) <= set(CONFIGURATIONS)
                      and set(info.plans) <= set(BY_PLANS)
                      and info.folds and all(0 <= f < N_FOLDS for f in info.folds)
                      and all(m.folder(self.ws, info.trainer).resolve().is_relative_to(results)
                              for m in info.members)
                      and info.postprocessing_file is not None
                      and info.postprocessing_file.resolve().is_relative_to(results))
        except (InputError, KeyError, OSError, ValueError, AttributeError):
            inside = False
        if not inside:
            raise InputError(f"{path} is not a model record of this workspace (it must name our trainer, "
                             f"configurations {', '.join(CONFIGURATIONS)}, plans {', '.join(BY_PLANS)}, folds "
                             f"0-{N_FOLDS - 1} and files inside {results}); run `ibsr-nnunet ensemble` again.")
        return info

    @property
    def trainer(self) -> str:
        return self.record.trainer

    @property
    def members(self) -> tuple[Member, ...]:
        return self.record.members

    @property
    def folds(self) -> tuple[int, ...]:
        return self.record.folds

    @property
    def postprocessing_file(self) -> Path:
        return self.record.postprocessing_file

    def fold_folders(self) -> list[Path]:
        return [m.fold(self.ws, self.trainer, f) for m in self.members for f in self.folds]

    def weight_files(self) -> list[Path]:
        return [fold / "checkpoint_final.pth" for fold in self.fold_folders()] + [self.postprocessing_file]

    def portable_files(self) -> list[Path]:
        """Each member's plans, dataset.json and fingerprint (nnU-Net's predictor reads them), its folds' final
        checkpoints, the postprocessing, and the prediction set's model.json and provenance."""
        beside = [m.folder(self.ws, self.trainer) / name for m in self.members for name in TRAINER_FILES]
        records = [prediction_record_path(self.folder), self.folder / PROVENANCE_FILE]
        return [*(p for p in beside if p.is_file()), *self.weight_files(), *(p for p in records if p.is_file())]

    def refusal(self, then: str = "segment") -> Optional[str]:
        if not self.trained():
            return (f"model {self.name} has no record at {prediction_record_path(self.folder)}; run `{self.remake}` "
                    f"first.")
        if why := self.stale():
            return f"model {self.name} is stale ({self.folder}: {why}); run `{self.retrain}` first."
        try:
            self.record
        except InputError as broken:
            return str(broken)
        for member in self.members:
            for fold in self.folds:
                folder = member.fold(self.ws, self.trainer, fold)
                if why := fold_unready(folder):
                    return (f"model {self.name} uses {member.label} fold {fold} ({folder}), which {why}; let its "
                            f"`ibsr-nnunet train --fold {fold} --config {member.configuration}"
                            f"{member.preset.option()}` finish (run it again if it stopped), then {then}.")
        return None

    @property
    def axcodes(self) -> tuple[str, ...]:
        return self.record.axcodes or super().axcodes

    def predict(self, volumes: Iterable[tuple[str, Volume]], settings: PredictSettings) -> Iterator[Prediction]:
        """Each volume written for nnU-Net to read, the chain (predict, ensemble, postprocess) over all of them,
        then each map read back."""
        scratch = Path(settings.scratch)
        images = scratch / "images"
        images.mkdir(parents=True, exist_ok=True)
        seconds: dict[str, float] = {}
        failed: list[Prediction] = []
        keys: dict[Path, str] = {}

        def written() -> Iterator[Path]:
            for key, volume in volumes:
                started = time.perf_counter()
                image = images / f"{key}_0000.nii.gz"
                try:
                    write_volume(volume.with_array(volume.array.astype(np.float32)), image)
                except Exception as err:
                    failed.append(Prediction(key, error=err, step="writing the scan for nnU-Net"))
                    continue
                keys[image] = key
                seconds[key] = time.perf_counter() - started
                yield image

        def timed(image: Path, spent: float) -> None:
            seconds[keys[image]] += spent

        members = self.members
        output = self.name if len(members) > 1 else members[0].name
        chained = predict_chain(self.ws, self.trainer, members, folds=self.folds, images=written(),
                                scratch=scratch, postprocessing={output: self.postprocessing_file},
                                device=settings.device, jobs=settings.jobs, log=scratch / "nnunet.log",
                                ensembles={output: members} if len(members) > 1 else None, on_image=timed,
                                probabilities=settings.probabilities, tta=settings.tta,
                                step_size=settings.step_size)[output]
        yield from failed
        for key in keys.values():
            started = time.perf_counter()
            try:
                labels = read_volume(chained.labels / f"{key}.nii.gz").array.astype(np.uint8)
                sums = sure = None
                if settings.probabilities:  # the softmax (the ensemble's average) before postprocessing
                    with np.load(chained.probabilities / f"{key}.npz") as npz:
                        softmax = npz["probabilities"]
                    sums = softmax.reshape(softmax.shape[0], -1).sum(axis=1)
                    sure = confidence(softmax, softmax.argmax(axis=0))  # nnU-Net's axis order: the same voxels
            except Exception as err:
                yield Prediction(key, error=err, step="reading nnU-Net's prediction")
                continue
            yield Prediction(key, labels, sums, seconds[key] + time.perf_counter() - started, confidence=sure)

    def _lenient_record(self) -> Optional[PredictionRecord]:
        """model.json as written, unchecked (validation and history only read the folds it names), or None."""
        try:
            return read_prediction_record(self.folder)
        except InputError:
            return None

    def validation(self) -> Validation:
        try:
            found = read_prediction_record(self.folder)
        except InputError as broken:  # a record cut short: no number, no crash
            return Validation({}, f"{self.name}: {broken} (cv_dice_mean left empty)")
        try:
            crossval = crossval_dice(self.ws, found) if found is not None else None
        except (ValueError, KeyError, TypeError) as broken:  # a summary cut short: no number, no crash
            return Validation({}, f"{self.name}: nnU-Net's validation summaries are unreadable ({broken!r}); "
                                  f"cv_dice_mean left empty, run `ibsr-nnunet ensemble` again to rewrite them.")
        if not crossval:
            return Validation({})
        return Validation({"cv_dice_mean": crossval.mean, "cv_n": crossval.n,
                           **{f"{t}_cv_dice_mean": d for t, d in crossval.dice.items()}})

    def _history_folds(self) -> list[Path]:
        found = self._lenient_record()
        if found is None:
            return []
        return [m.fold(self.ws, found.trainer, fold) for m in found.members for fold in found.folds]

    def training_seconds(self) -> float:
        """All its folds' wall time: each run's first to last log line, summed over resumed runs."""
        folds = self._history_folds()
        return sum(sum(map(log_seconds, logs(fold))) for fold in folds) if folds else math.nan

    def training_curves(self) -> dict[str, pd.DataFrame]:
        """One curve per fold."""
        curves = {}
        for fold in self._history_folds():
            curve = fold_curve(fold)
            if not curve.empty:
                match = MODEL_FOLDER.fullmatch(fold.parent.name)
                label = Member(match["plans"], match["configuration"]).label if match else fold.parent.name
                curves[f"{label} {fold.name}"] = curve
        return curves

    def progress(self, job: TrainingJob) -> Progress:
        """One fold of one configuration, from nnU-Net's own files (training logs, validation summary) and
        runs.jsonl."""
        preset, key = NNUNET_MODEL_KEYS[self.name]
        if key not in CONFIGURATIONS or job.fold is None or job.trainer is None:
            return super().progress(job)  # an ensemble: each of its folds is a job of its configuration
        folder = Member(PRESET_TABLE[preset].plans, key).fold(self.ws, job.trainer, job.fold)
        finished, runs = fold_finished(folder), tuple(read_runs(folder))
        curve = fold_curve(folder)
        completed = curve.dropna(subset=["train_loss"])  # an epoch's losses are logged when it ends
        latest = {column: float(values.iloc[-1]) for column in ("pseudo_dice", "val_loss")
                  if len(values := curve[column].dropna())}
        done = int(completed["epoch"].max()) + 1 if len(completed) else 0
        return Progress(folder, job.epochs if finished and job.epochs is not None else done, finished=finished,
                        runs=runs, validation_dice=validation_dice(folder),
                        epoch_seconds=_fold_epoch_seconds(folder, runs), **latest)


def _fold_epoch_seconds(folder: Path, runs: tuple[Run, ...]) -> tuple[float, ...]:
    """Durations of the latest epochs on the current device, from the training log each run recorded (every log
    when no run recorded one: a fold trained by nnU-Net's own command)."""
    device = current_device(runs)
    recorded = [run.start["log"] for run in runs if run.start.get("log") and run.start.get("device_name") == device]
    paths = [folder / log for log in recorded] if recorded else logs(folder)
    return tuple(e.seconds for path in paths for e in log_epochs(path) if e.finished)[-RECENT_EPOCHS:]


def fold_curve(fold: Path) -> pd.DataFrame:
    """epoch, train_loss, val_loss, pseudo_dice per epoch of one fold; a resumed epoch keeps its last complete run."""
    rows = [{"epoch": e.epoch, **{k: getattr(e, k) for k in CURVE if getattr(e, k) is not None}}
            for e in fold_epochs(fold) if any(getattr(e, k) is not None for k in CURVE)]
    return pd.DataFrame(rows, columns=["epoch", *CURVE])

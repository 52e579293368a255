"""The hand-built PyTorch baselines: one model per run folder baselines/MODEL__LOSS, its best weights best.pt."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import pandas as pd

from baselines.registry import LOSSES, MODELS, MODELS_2D, VIEWS, baseline_name, baseline_problem, train_options_of
from baselines.run_folder import (
    LOG,
    ORIENTATION,
    RUN_RECORD,
    EpochRow,
    best_weights_path,
    read_log,
    read_orientation,
    read_run_record,
)

from ..core.errors import InputError
from ..core.oriented import Prediction
from ..core.provenance import PROVENANCE_FILE
from ..core.runlog import Run, read_runs
from ..core.workspace import Workspace
from ..data.volumes import Volume
from .protocol import RECENT_EPOCHS, PredictSettings, Progress, TrainedModel, TrainingJob, Validation, current_device
from .registry import register


@register
@dataclass(frozen=True)
class BaselineModel(TrainedModel):
    """MODEL__LOSS or MODEL_VIEW__LOSS, e.g. unet2d__dice_ce or unet2d_axial__dice_ce: a 2D or 3D U-Net trained by
    `baseline train`."""

    kind = "baseline"

    @classmethod
    def claims(cls, name: str) -> bool:
        return baseline_problem(name) is None

    @classmethod
    def examples(cls) -> tuple[str, ...]:
        return (*MODELS, *(baseline_name(model, loss) for model in MODELS for loss in LOSSES),
                *(baseline_name(model, loss, view) for model in MODELS_2D for loss in LOSSES for view in VIEWS))

    @classmethod
    def refusal_of_name(cls, name: str) -> str:
        return f"{baseline_problem(name)}; write it as e.g. unet2d__dice_ce"

    @classmethod
    def trained_names(cls, ws: Workspace) -> list[str]:
        if not ws.baselines.is_dir():
            return []
        return sorted(run.name for run in ws.baselines.iterdir()
                      if cls.claims(run.name) and best_weights_path(run).is_file())

    @property
    def folder(self) -> Path:
        return self.ws.baselines / self.name

    @property
    def remake(self) -> str:
        return f"ibsr-nnunet baseline predict {train_options_of(self.name)}"

    @property
    def retrain(self) -> str:
        return f"{self._train} --archive-stale"

    @property
    def _train(self) -> str:
        return f"ibsr-nnunet baseline train {train_options_of(self.name)}"

    def trained(self) -> bool:
        return best_weights_path(self.folder).is_file()

    def weight_files(self) -> list[Path]:
        return [best_weights_path(self.folder)]

    def portable_files(self) -> list[Path]:
        """The best weights and the run's records (not checkpoint.pt: a resume's optimizer state), and the prediction
        set's provenance, which says which weights its leaderboard scores were made with."""
        records = [self.folder / name for name in (RUN_RECORD, LOG, ORIENTATION, PROVENANCE_FILE)]
        scored = self.ws.predictions / self.name / PROVENANCE_FILE
        return [*self.weight_files(), *(p for p in (*records, scored) if p.is_file())]

    def refusal(self, then: str = "segment") -> Optional[str]:
        from baselines.workspace import unfinished  # torch: only when a baseline is about to be used

        if why := self.stale():  # first: `baseline train` refuses a stale run folder, weights or not
            return f"model {self.name} is stale ({self.folder}: {why}); run `{self.retrain}` first."
        if not self.trained():
            return (f"model {self.name} is not trained in this workspace (no {best_weights_path(self.folder)}); "
                    f"train it with `{self._train}`, then {then}.")
        if why := unfinished(self.folder):
            return f"model {self.name} ({self.folder}) {why}, then {then}."
        return None

    @property
    def axcodes(self) -> tuple[str, ...]:
        orientation = read_orientation(self.folder)
        return orientation.axcodes if orientation else super().axcodes

    def predict(self, volumes: Iterable[tuple[str, Volume]], settings: PredictSettings) -> Iterator[Prediction]:
        """Each volume as soon as it comes (it slices across its training axis); the best weights loaded once."""
        from baselines.infer import Predictor

        predictor = Predictor(self.folder, device=settings.device, overlap=1 - settings.step_size,
                              tta=bool(settings.tta), resample=settings.resample)
        for key, volume in volumes:
            started = time.perf_counter()
            try:
                labels, soft = predictor(volume, probabilities=settings.probabilities)
            except Exception as err:
                yield Prediction(key, error=err, seconds=time.perf_counter() - started)
                continue
            yield Prediction(key, labels, soft and soft.sums, time.perf_counter() - started,
                             confidence=soft and soft.confidence)

    def validation(self) -> Validation:
        try:
            record = read_run_record(self.folder)
        except InputError:  # a record cut short: the run exists, its Dice is unknown
            return Validation({"internal_val_dice": math.nan})
        if record is None:
            return Validation({})
        return Validation({"internal_val_dice": math.nan if record.best_val_dice is None else record.best_val_dice})

    def training_seconds(self) -> float:
        """The training budget the run record says was used."""
        record = read_run_record(self.folder)
        return record.train_seconds if record is not None else math.nan

    def training_curves(self) -> dict[str, pd.DataFrame]:
        rows = read_log(self.folder)
        return {self.name: pd.DataFrame([asdict(row) for row in rows])} if rows else {}

    def progress(self, job: TrainingJob) -> Progress:
        """From the run's own record and log (training rewrites them at every save); finished once its
        predictions are written too."""
        if job.fold is not None:
            raise InputError(f"{self.name} is trained in one run, not by folds (fold {job.fold} asked for).")
        runs = tuple(read_runs(self.folder))
        try:
            record = read_run_record(self.folder)
        except InputError:  # cut short while it is rewritten: nothing known yet
            record = None
        if record is None:
            return Progress(self.folder, runs=runs)
        predictions = self.ws.predictions / self.name
        finished = record.finished and predictions.is_dir() and any(predictions.glob("*.nii.gz"))
        try:
            rows = read_log(self.folder)
        except InputError:
            rows = ()
        latest = {"val_loss": rows[-1].val_loss, "pseudo_dice": rows[-1].val_dice} if rows else {}
        return Progress(self.folder, record.epochs_done, validation_dice=record.best_val_dice, finished=finished,
                        runs=runs, epoch_seconds=_epoch_seconds(rows, runs) if rows else (), **latest)


def _epoch_seconds(rows: tuple[EpochRow, ...], runs: tuple[Run, ...]) -> tuple[float, ...]:
    """Durations of the latest epochs on the current device, from log.csv's `seconds` (training time summed
    across runs, at each epoch's end). A run's first epoch is left out: its difference spans the restart."""
    elapsed = {row.epoch: row.seconds for row in rows}
    device = current_device(runs)
    first_of_run = {run.epoch_start + 1 for run in runs if run.epoch_start is not None}
    own = set()
    for i, run in enumerate(runs):
        if run.start.get("device_name") != device or run.epoch_start is None:
            continue
        last = run.epoch_end
        if last is None:  # running, or killed: until the next run's start, else the log's end
            later = [r.epoch_start for r in runs[i + 1:] if r.epoch_start is not None]
            last = later[0] if later else max(elapsed, default=0)
        own.update(range(run.epoch_start + 1, last + 1))
    if not runs:  # trained before runs were recorded: every epoch
        own = set(elapsed)
    return tuple(elapsed[e] - elapsed[e - 1] for e in sorted(own)
                 if e in elapsed and e - 1 in elapsed and e not in first_of_run)[-RECENT_EPOCHS:]

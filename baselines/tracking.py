"""A baseline run's epochs logged to Weights & Biases (the optional extra `tracking`): the values log.csv gets, one
W&B step per epoch, into the same W&B run whenever the run resumes."""

from __future__ import annotations

from pathlib import Path

from ibsr_nnunet.core.tracking import Tracking

from .run_folder import LOG_COLUMNS


class EpochTracker:
    """One training call's part of the W&B run `run_id` (offline: files in the run folder's wandb/, where nnU-Net
    keeps its fold's), opened at the first finished epoch, so a call that trains none leaves nothing; `log` takes
    each finished epoch's log row (nothing without tracking). A context manager: leaving it ends this call's part,
    marked failed when an exception (a stop signal included) left it."""

    def __init__(self, tracking: Tracking, folder: Path, run_id: str, config: dict):
        self.tracking, self.folder, self.run_id, self.config = tracking, Path(folder), run_id, config
        self.run = None

    def __enter__(self) -> "EpochTracker":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if kind is None else 1)
            self.run = None

    def log(self, row: dict) -> None:
        if not self.tracking.enabled:
            return
        if self.run is None:
            import wandb

            self.run = wandb.init(project=self.tracking.project, id=self.run_id, dir=str(self.folder),
                                  mode=self.tracking.mode, resume="allow", config=self.config,
                                  settings=wandb.Settings(silent=True, console="off"))
        values = {key: float(row[key]) for key in LOG_COLUMNS if key != "epoch" and row.get(key) is not None}
        self.run.log(values, step=int(row["epoch"]))

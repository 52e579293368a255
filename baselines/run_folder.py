"""A baseline run's folder, <workspace>/baselines/MODEL__LOSS/: the one module that reads and writes its files.

    checkpoint.pt     everything a resume needs, rewritten at every save (torch, loaded with weights_only): options
                      (TrainOptions as a dict), model, optimizer, scheduler, scaler (state dicts), epoch, best_val_loss,
                      best_val_dice, bad_epochs, train_seconds, log (the rows of log.csv), finished, val_ids, rng
                      ({"sampler", "torch", "cuda"} random states)
    best.pt           the weights with the lowest validation loss so far: options, epoch, model (CPU tensors)
    run.json          what the run is and how far it got, rewritten at every save: model, loss, options,
                      train_cases, val_cases, epochs_done, best_val_loss and best_val_dice (null before the first
                      epoch), train_seconds, finished
    log.csv           one row per finished epoch: epoch, train_loss, val_loss, val_dice, lr, seconds (training time
                      summed across resumes at the epoch's end)
    orientation.json  the axis codes of the training images, the axis 2D models slice across (their view's) and the
                      training images' median spacing (mm) in that orientation, and the view:
                      {"axcodes": ["R", "A", "S"], "slicing_axis": 1, "spacing": [0.9375, 1.5, 0.9375],
                       "view": "thickest"}

Every write is atomic. Reading needs no torch except for the two checkpoints."""

from __future__ import annotations

import csv
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ibsr_nnunet.core.atomic import atomic_path, write_json, write_text
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.jsonfile import read_json_object, read_json_or_none
from ibsr_nnunet.core.workspace import Workspace

from .registry import THICKEST, baseline_name

CHECKPOINT = "checkpoint.pt"
BEST_WEIGHTS = "best.pt"
RUN_RECORD = "run.json"
LOG = "log.csv"
ORIENTATION = "orientation.json"
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")


def run_dir(ws: Workspace, model: str, loss: str, view: str = THICKEST) -> Path:
    """The run folder of `model` trained with `loss` on slices of `view`."""
    return ws.baselines / baseline_name(model, loss, view)


def best_weights_path(folder: Path) -> Path:
    return Path(folder) / BEST_WEIGHTS


def checkpoint_path(folder: Path) -> Path:
    return Path(folder) / CHECKPOINT


# ---- run.json ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    """run.json: what the run is and how far it got."""

    model: str
    loss: str
    options: dict
    train_cases: tuple[str, ...]
    val_cases: tuple[str, ...]
    epochs_done: int
    best_val_loss: Optional[float]  # None before the first finished epoch
    best_val_dice: Optional[float]
    train_seconds: float  # NaN when not recorded
    finished: bool  # training ended (budget spent or stopped early), not merely paused


def write_run_record(folder: Path, record: RunRecord) -> None:
    write_json(Path(folder) / RUN_RECORD, {
        "model": record.model, "loss": record.loss, "options": record.options,
        "train_cases": list(record.train_cases), "val_cases": list(record.val_cases),
        "epochs_done": record.epochs_done, "best_val_loss": record.best_val_loss,
        "best_val_dice": record.best_val_dice, "train_seconds": record.train_seconds, "finished": record.finished,
    })


def read_run_record(folder: Path) -> Optional[RunRecord]:
    """The folder's run.json, or None when it has none; InputError naming the file when it is not one."""
    saved = read_json_object(Path(folder) / RUN_RECORD, "run `ibsr-nnunet baseline train` for this run again to "
                             "rewrite it", "a baseline run record", missing_ok=True)
    if saved is None:
        return None
    dice, loss, seconds = saved.get("best_val_dice"), saved.get("best_val_loss"), saved.get("train_seconds")
    return RunRecord(
        model=str(saved.get("model", "")), loss=str(saved.get("loss", "")), options=dict(saved.get("options") or {}),
        train_cases=tuple(saved.get("train_cases") or ()), val_cases=tuple(saved.get("val_cases") or ()),
        epochs_done=int(saved.get("epochs_done") or 0),
        best_val_loss=None if loss is None else float(loss), best_val_dice=None if dice is None else float(dice),
        train_seconds=math.nan if seconds is None else float(seconds), finished=saved.get("finished") is True)


def run_finished(folder: Path) -> bool:
    """Whether the run's record says its training ended (budget spent or stopped early), not merely paused."""
    try:
        record = read_run_record(folder)
    except InputError:
        return False
    return record is not None and record.finished


# ---- log.csv ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpochRow:
    """One row of log.csv; a loss or Dice left empty reads as None."""

    epoch: int
    train_loss: Optional[float]
    val_loss: Optional[float]
    val_dice: Optional[float]
    lr: Optional[float]
    seconds: float


def write_log(folder: Path, rows: list[dict]) -> None:
    """log.csv from the loop's rows (dicts keyed by LOG_COLUMNS)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(Path(folder) / LOG, buffer.getvalue())


def read_log(folder: Path) -> tuple[EpochRow, ...]:
    """The folder's epochs, oldest first; () without a log.csv; InputError naming the file when it is not one."""
    path = Path(folder) / LOG

    def number(text: Optional[str]) -> Optional[float]:
        return float(text) if text not in (None, "") else None

    try:
        with open(path, newline="") as handle:
            return tuple(EpochRow(int(row["epoch"]), number(row["train_loss"]), number(row["val_loss"]),
                                  number(row["val_dice"]), number(row.get("lr")), float(row["seconds"]))
                         for row in csv.DictReader(handle))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} is not a baseline training log ({type(err).__name__}: {err}); run `ibsr-nnunet "
                         f"baseline train` for this run again to rewrite it.") from err


# ---- orientation.json -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingOrientation:
    """The axis codes of the training images, the axis 2D models slice across in that orientation, the training
    images' median spacing (mm) there (None for a run recorded before it was: its scans are never resampled), and
    the view that axis is."""

    axcodes: tuple[str, ...]
    slicing_axis: int
    spacing: Optional[tuple[float, ...]] = None
    view: str = THICKEST


def write_orientation(folder: Path, orientation: TrainingOrientation) -> None:
    record = {"axcodes": list(orientation.axcodes), "slicing_axis": int(orientation.slicing_axis)}
    if orientation.spacing is not None:
        record["spacing"] = [float(s) for s in orientation.spacing]
    record["view"] = orientation.view
    write_json(Path(folder) / ORIENTATION, record)


def read_orientation(folder: Path) -> Optional[TrainingOrientation]:
    """What the run was trained on; None for a run trained before it was recorded (then inputs are not reoriented
    and 2D models slice across the thickest axis, as they were)."""
    saved = read_json_or_none(Path(folder) / ORIENTATION)
    try:
        spacing = saved.get("spacing")
        spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        if spacing is not None and (len(spacing) != len(saved["axcodes"]) or min(spacing) <= 0):
            spacing = None  # not a spacing this tool wrote: predict at the scan's own, as before it was recorded
        return TrainingOrientation(tuple(saved["axcodes"]), int(saved["slicing_axis"]), spacing,
                                   str(saved.get("view", THICKEST)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


# ---- checkpoint.pt and best.pt ----------------------------------------------------------------------------------

def read_checkpoint(path: Path, fix: str, keys: tuple[str, ...] = ("options", "model")) -> dict:
    """A checkpoint this tool wrote (best.pt, checkpoint.pt: plain dicts, tensors, numbers, strings, lists), loaded
    with weights_only so nothing in the file can run. A file that would need full unpickling (an older format, or
    not ours), is corrupt, or lacks `keys` is refused in one sentence ending in `fix`, never unpickled."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror or err}); {fix}.") from err
    except Exception as err:  # a damaged file: torch raises RuntimeError, KeyError, EOFError, ... depending on where
        if isinstance(err, pickle.UnpicklingError) and "unsupported global" in str(err).lower():
            raise InputError(f"{path} holds objects only full unpickling would rebuild (an older format, or a file "
                             f"not written by ibsr-nnunet), so it is not loaded: that could run code; {fix}.") from err
        raise InputError(f"{path} is corrupt or not a checkpoint ({type(err).__name__}); {fix}.") from err
    if not isinstance(saved, dict) or not all(key in saved for key in keys):
        raise InputError(f"{path} is not a checkpoint of ibsr-nnunet's baselines (it lacks {', '.join(keys)}); {fix}.")
    return saved


def _save(path: Path, content: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def write_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """checkpoint.pt: the resume state (the keys in this module's docstring)."""
    _save(checkpoint_path(folder), state)


def read_resume_checkpoint(folder: Path) -> Optional[dict[str, Any]]:
    """The run's last checkpoint.pt, or None when it has none yet."""
    path = checkpoint_path(folder)
    fix = f"delete it to train {Path(folder).name} afresh"
    return read_checkpoint(path, fix, keys=("options", "model", "optimizer", "epoch")) if path.is_file() else None


@dataclass(frozen=True)
class BestWeights:
    """best.pt: the options the run was trained with (as saved), the epoch and the network's state dict."""

    options: dict
    epoch: Optional[int]
    model: dict


def write_best_weights(folder: Path, options: dict, epoch: int, model_state: dict) -> None:
    _save(best_weights_path(folder), {"options": options, "epoch": epoch, "model": model_state})


def read_best_weights(folder: Path, fix: str) -> BestWeights:
    """best.pt, refused in one sentence ending in `fix` when it is not a checkpoint of this tool."""
    saved = read_checkpoint(best_weights_path(folder), fix)
    return BestWeights(saved["options"], saved.get("epoch"), saved["model"])

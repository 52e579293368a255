"""One nnU-Net fold folder as the tool reads it: finished or not, its epochs from the training logs (one parser),
its validation summary and its checkpoints (no nnunetv2 import; torch only to load a checkpoint)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.errors import InputError
from ..core.jsonfile import read_json
from ..core.locks import current_holder, lock_path

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_previous.pth")  # newest first
SUMMARY = Path("validation") / "summary.json"  # nnU-Net's validation of the fold, written after training
LOGS = "training_log_*.txt"  # one per run; names carry the start time, so sorted means oldest run first
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): (.*?)\s*$")  # nnU-Net's "<time>: <text>" lines
EPOCH = re.compile(r"Epoch (\d+)")
LOSS = re.compile(r"(train_loss|val_loss) (-?[\d.]+(?:e-?\d+)?)")
EPOCH_TIME = re.compile(r"Epoch time: ([\d.]+) s")
NUMBER = re.compile(r"\d+\.\d+(?:e-?\d+)?")  # in "Pseudo dice [np.float32(0.45), ...]" or "[0.45, ...]"


@dataclass(frozen=True)
class LoggedEpoch:
    """One epoch as a training log records it; seconds is None until the epoch finished ("Epoch time")."""

    epoch: int
    seconds: Optional[float] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    pseudo_dice: Optional[float] = None  # the mean over the classes of nnU-Net's per-class pseudo Dice

    @property
    def finished(self) -> bool:
        return self.seconds is not None


def stamped_lines(log: Path) -> list[tuple[datetime, str]]:
    """(time, text) of each line nnU-Net stamped in one training log; none when it cannot be read."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return []
    return [(datetime.fromisoformat(m[1]), m[2]) for line in text.splitlines() if (m := STAMPED.match(line))]


def parse_log(lines: list[tuple[datetime, str]]) -> list[LoggedEpoch]:
    """The epochs of one log's stamped lines, in the order it started them; what follows "Epoch N" belongs to N."""
    epochs: list[LoggedEpoch] = []
    for _, text in lines:
        if m := EPOCH.fullmatch(text):
            epochs.append(LoggedEpoch(int(m[1])))
        elif not epochs:
            continue
        elif m := LOSS.fullmatch(text):
            epochs[-1] = replace(epochs[-1], **{m[1]: float(m[2])})
        elif m := EPOCH_TIME.fullmatch(text):
            epochs[-1] = replace(epochs[-1], seconds=float(m[1]))
        elif text.startswith("Pseudo dice") and (values := [float(v) for v in NUMBER.findall(text)]):
            epochs[-1] = replace(epochs[-1], pseudo_dice=sum(values) / len(values))
    return epochs


def logs(folder: Path) -> list[Path]:
    """The fold's training logs, oldest run first."""
    return sorted(Path(folder).glob(LOGS))


def log_epochs(log: Path) -> list[LoggedEpoch]:
    return parse_log(stamped_lines(log))


def fold_epochs(folder: Path) -> list[LoggedEpoch]:
    """Every epoch of every run of the fold, by epoch; an epoch a resumed run repeated takes that run's values (and
    keeps the earlier run's where the later logged none)."""
    merged: dict[int, LoggedEpoch] = {}
    for log in logs(folder):
        for epoch in log_epochs(log):
            earlier = merged.get(epoch.epoch, epoch)
            merged[epoch.epoch] = replace(earlier, **{k: v for k, v in vars(epoch).items() if v is not None})
    return [merged[epoch] for epoch in sorted(merged)]


def epochs_reached(folder: Path) -> Optional[int]:
    """The most epochs any run of the fold finished, from its training logs (None when none did)."""
    ends = [epoch.epoch + 1 for log in logs(folder) for epoch in log_epochs(log) if epoch.finished]
    return max(ends) if ends else None


def log_seconds(log: Path) -> float:
    """Wall time of one run: its log's first to last stamped line."""
    lines = stamped_lines(log)
    return (lines[-1][0] - lines[0][0]).total_seconds() if lines else 0.0


def summary_file(folder: Path) -> Path:
    return Path(folder) / SUMMARY


def read_summary(path: Path) -> dict:
    """An nnU-Net summary.json (a fold's validation, or a cross-validation folder's); InputError when unreadable."""
    summary = read_json(path, "run the training or `ibsr-nnunet ensemble` that writes it again")
    if not isinstance(summary, dict):
        raise InputError(f"{path} is not an nnU-Net summary (not a JSON object); run what writes it again.")
    return summary


def validation_dice(folder: Path) -> Optional[float]:
    """The mean foreground Dice of the fold's validation; None before it is written (or when it is unreadable)."""
    try:
        return float(read_summary(summary_file(folder))["foreground_mean"]["Dice"])
    except (InputError, KeyError, TypeError, ValueError):
        return None


def fold_finished(folder: Path) -> bool:
    """Training ended (final checkpoint) and nnU-Net's validation was written (summary)."""
    return (Path(folder) / CHECKPOINTS[0]).is_file() and summary_file(folder).is_file()


def fold_unready(folder: Path) -> Optional[str]:
    """None when the fold's training ended (final checkpoint) and no live `train` writes it now; else why not."""
    holder = current_holder(lock_path(folder))
    if holder is not None:
        return f"is being trained right now by {holder.describe()}"
    if not (Path(folder) / CHECKPOINTS[0]).is_file():
        return "has no checkpoint_final.pth (its training has not finished)"
    return None


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that loaded: its file name and its contents (what nnU-Net's load_checkpoint takes)."""

    name: str
    state: dict


def _load(path: Path, device) -> tuple[Optional[dict], str]:
    """(the checkpoint, "") when `path` loads, else (None, why not)."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=False)
        state["current_epoch"], state["network_weights"]
        return state, ""
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        return None, " ".join(str(err).split())[:160] or type(err).__name__


def newest_checkpoint(folder: Path, device: Any, say: Callable[[str], None]) -> Optional[Checkpoint]:
    """The newest checkpoint that loads, loaded once (None: start fresh); each unreadable one passed over is said."""
    for name in CHECKPOINTS:
        path = Path(folder) / name
        if not path.is_file():
            continue
        state, problem = _load(path, device)
        if state is not None:
            return Checkpoint(name, state)
        say(f"{name} is unreadable ({problem}); falling back to the previous checkpoint")
    return None

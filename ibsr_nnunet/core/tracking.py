"""Experiment tracking of a training run: which tool (Weights & Biases), its mode and project, and the tool's run id,
derived from the run folder and its dataset so that a requeued or resumed run continues the same tracked run."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import InputError

TOOLS = ("wandb",)
MODES = ("offline", "online")  # offline first: compute nodes often have no internet (`wandb sync` uploads later)
DEFAULT_PROJECT = "ibsr-nnunet"
EXTRA = 'pip install "ibsr-nnunet[tracking]"'
PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Tracking:
    """Where a training run logs its epochs. tool: "wandb", or None (not tracked); mode: "offline" (files in the run
    folder's wandb/, uploaded later with `wandb sync`) or "online"; project: the W&B project."""

    tool: Optional[str] = None
    mode: str = "offline"
    project: str = DEFAULT_PROJECT

    def __post_init__(self) -> None:
        if self.tool is not None and self.tool not in TOOLS:
            raise InputError(f"--track {self.tool} is unknown; use {', '.join(TOOLS)} (or leave it out).")
        if self.mode not in MODES:
            raise InputError(f"--track-mode {self.mode} is unknown; use {' or '.join(MODES)}.")
        if not isinstance(self.project, str) or not PROJECT.fullmatch(self.project):
            raise InputError(f"--track-project {self.project!r} is refused; use letters, digits and _ . - (up to 128, "
                             f"starting with a letter or digit), e.g. {DEFAULT_PROJECT}.")

    @property
    def enabled(self) -> bool:
        return self.tool is not None

    def require(self) -> None:
        """Refuse tracking whose package is not installed, before any training starts."""
        if not self.enabled:
            return
        try:
            import wandb  # noqa: F401  (the optional extra)
        except ImportError:
            raise InputError(f"--track wandb needs the wandb package, which is not installed here: run `{EXTRA}` "
                             f"(or leave --track out).") from None

    def options(self) -> list[str]:
        """The same tracking as command-line options (for the jobs `submit` and `script` render); [] when off."""
        if not self.enabled:
            return []
        return ["--track", self.tool, "--track-mode", self.mode, "--track-project", self.project]

    def record(self, run_id: str) -> Optional[dict]:
        """What a run's start line in runs.jsonl says about its tracking; None when off."""
        if not self.enabled:
            return None
        return {"tool": self.tool, "mode": self.mode, "project": self.project, "run_id": run_id}


def tracked_run_id(folder: Path, fingerprint: str) -> str:
    """The tool's run id of the training run in `folder` (a fold or a baseline run) made from the dataset
    `fingerprint`: the same for every run of that folder (a requeue, a resume), another one for another folder or
    dataset. Letters, digits, - and _ only, at most 64 characters."""
    folder = Path(folder).resolve()
    digest = hashlib.sha256(f"{folder}\0{fingerprint}".encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{folder.parent.name}-{folder.name}").strip("-")
    return f"{name[:50]}-{digest}"

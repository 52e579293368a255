"""The workspace: one folder that holds everything, and the one object that knows every path in it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from .atomic import write_json
from .errors import InputError
from .jsonfile import read_json_object
from .manifest import Manifest, Role, manifest_path, read_manifest

DEFAULT_WORKSPACE = "ibsr-workspace"
WORKSPACE_ENV = "IBSR_NNUNET_WORKSPACE"
DEFAULT_DATASET_ID = 501
DATASET_SUFFIX = "IBSR18"
WORKSPACE_FILE = "workspace.json"  # {"dataset_id": 501}: the dataset the commands after `convert` work on


class Case(NamedTuple):
    """One converted case: its ID, its image in nnU-Net's raw dataset, and its label file (None for test cases)."""

    id: str
    image: Path
    label: Optional[Path]


def dataset_name(dataset_id: int) -> str:
    """nnU-Net's folder name for a dataset ID, e.g. 501 -> Dataset501_IBSR18."""
    if not 1 <= dataset_id <= 999:
        raise InputError(f"dataset ID {dataset_id} is out of range: nnU-Net needs 1..999; pass --dataset-id 501.")
    return f"Dataset{dataset_id:03d}_{DATASET_SUFFIX}"


@dataclass(frozen=True)
class Workspace:
    """Every path of one workspace; `dataset_id` picks the nnU-Net dataset inside it."""

    root: Path
    dataset_id: int = DEFAULT_DATASET_ID

    @classmethod
    def open(cls, root: str | os.PathLike | None = None, dataset_id: int | None = None) -> "Workspace":
        """The workspace at `root` (else $IBSR_NNUNET_WORKSPACE, else ./ibsr-workspace), dataset ID as recorded."""
        root = Path(root or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE).expanduser().absolute()
        if dataset_id is None:
            dataset_id = cls._recorded_dataset_id(root)
        return cls(root=root, dataset_id=dataset_id)

    @staticmethod
    def _recorded_dataset_id(root: Path) -> int:
        state = root / WORKSPACE_FILE
        fix = "delete it and run `ibsr-nnunet convert` again"
        recorded = read_json_object(state, fix, "a workspace record", missing_ok=True)
        if recorded is None:
            return DEFAULT_DATASET_ID
        try:
            return int(recorded["dataset_id"])
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{state} records no dataset ID ({type(err).__name__}: {err}); {fix}.") from None

    # nnU-Net's three roots
    @property
    def nnunet_raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def nnunet_preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def nnunet_results(self) -> Path:
        return self.root / "nnUNet_results"

    # this dataset inside them
    @property
    def dataset_name(self) -> str:
        return dataset_name(self.dataset_id)

    @property
    def raw_dataset(self) -> Path:
        return self.nnunet_raw / self.dataset_name

    @property
    def preprocessed_dataset(self) -> Path:
        return self.nnunet_preprocessed / self.dataset_name

    @property
    def results_dataset(self) -> Path:
        return self.nnunet_results / self.dataset_name

    @property
    def manifest(self) -> Path:
        """The conversion manifest: sources, checksums, label mapping, preprocessing, split, versions."""
        return manifest_path(self.raw_dataset)

    # our own rooms
    @property
    def baselines(self) -> Path:
        return self.root / "baselines"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def slurm(self) -> Path:
        return self.root / "slurm"

    @property
    def leaderboard(self) -> Path:
        return self.root / "leaderboard.csv"

    def cases(self, role: Role, manifest: Optional[Manifest] = None) -> list[Case]:
        """The converted cases of one role: training, held-out (labelled, scored) or test (no labels); from
        `manifest` when the caller has read it already."""
        folder = "Tr" if role == "train" else "Ts"
        manifest = read_manifest(self) if manifest is None else manifest
        return [Case(case, self.raw_dataset / f"images{folder}" / f"{case}_0000.nii.gz",
                     self.raw_dataset / f"labels{folder}" / f"{case}.nii.gz" if role != "test" else None)
                for case in manifest.case_ids(role)]

    def nnunet_env(self) -> dict[str, str]:
        """nnU-Net's three path variables for this workspace."""
        return {
            "nnUNet_raw": str(self.nnunet_raw),
            "nnUNet_preprocessed": str(self.nnunet_preprocessed),
            "nnUNet_results": str(self.nnunet_results),
        }

    def export_env(self) -> None:
        """Set nnU-Net's path variables in this process, so it and its children never need them by hand."""
        os.environ.update(self.nnunet_env())

    def ensure_writable(self) -> None:
        """Create the workspace root and prove it can be written, or say which folder to choose instead."""
        probe = self.root / f".write-probe-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise InputError(
                f"workspace {self.root} cannot be written ({err.strerror or err}); "
                f"pass --workspace with a folder you can write to."
            ) from None

    def record_dataset_id(self) -> None:
        """Remember which dataset this workspace works on, for the commands that follow convert."""
        write_json(self.root / WORKSPACE_FILE, {"dataset_id": self.dataset_id})

"""Shared fixtures: the real IBSR18 volumes beside the checkout, tiny phantom trees, NIfTI helpers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ibsr_nnunet.data.phantom import write_phantoms

SHARED_IBSR18 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibsr18"


@pytest.fixture(scope="session")
def shared_ibsr18() -> Path:
    assert SHARED_IBSR18.is_dir(), f"the real IBSR18 data must lie beside the checkout at {SHARED_IBSR18}"
    return SHARED_IBSR18


@pytest.fixture(scope="session")
def shared_manifest(shared_ibsr18) -> dict[str, dict]:
    """MANIFEST.txt rows by file: shape, spacing and label counts, as measured when the data was laid out."""
    rows = {}
    for line in (shared_ibsr18 / "MANIFEST.txt").read_text().splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 7 and parts[0].endswith(".nii.gz"):
            counts = dict(re.findall(r"(\d+):(\d+)", parts[6])) if parts[6].startswith("labels") else {}
            rows[parts[0]] = {"sha256": parts[1], "counts": {int(k): int(v) for k, v in counts.items()}}
    return rows


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """8 small phantom subjects in each layout (MISA: 5 train, 2 validation, 1 test)."""
    root = tmp_path_factory.mktemp("phantoms")
    for layout in ("misa", "nitrc", "analyze"):
        write_phantoms(root / layout, subjects=8, layout=layout, size="small", seed=0)
    return root


@pytest.fixture
def misa_copy(phantom_root, tmp_path) -> Path:
    """A writable copy of the MISA phantom tree, for tests that break it."""
    return Path(shutil.copytree(phantom_root / "misa", tmp_path / "source"))


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))

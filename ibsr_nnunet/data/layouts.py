"""IBSR18 source layouts as people have them on disk: find each subject's image, label file and split."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..core.errors import InputError

Split = Literal["train", "heldout", "test"]
LAYOUTS = ("misa", "nitrc", "analyze")
MISA_SPLITS: dict[str, Split] = {"Training_Set": "train", "Validation_Set": "heldout", "Test_Set": "test"}
SUBJECT_ID = re.compile(r"^(IBSR_\d+)")
NIFTI_ENDINGS = (".nii.gz", ".nii")
EXPECTED = (
    "Training_Set/IBSR_XX/IBSR_XX.nii.gz (MISA), IBSR_XX/IBSR_XX_ana_strip.nii.gz (NITRC NIfTI) "
    "or IBSR_XX/images/analyze/IBSR_XX_ana.img (NITRC Analyze)"
)


@dataclass(frozen=True)
class Subject:
    """One subject found in a source tree. `split` is the source's own split; `label` may be None for test."""

    subject_id: str
    image: Path
    label: Optional[Path]
    split: Split


def _with_nifti_ending(folder: Path, stem: str) -> Optional[Path]:
    for ending in NIFTI_ENDINGS:
        candidate = folder / f"{stem}{ending}"
        if candidate.is_file():
            return candidate
    return None


def _require_label(subject_id: str, label: Optional[Path], expected: Path, split: str) -> Path:
    if label is None:
        raise InputError(
            f"{expected}: missing label file for subject {subject_id} in the labelled {split} split; "
            f"add it, or move the subject to Test_Set if it has no labels."
        )
    return label


def find_misa(source: Path) -> list[Subject]:
    """MISA course: {Training,Validation,Test}_Set/IBSR_XX/IBSR_XX.nii.gz (+ IBSR_XX_seg.nii.gz)."""
    subjects = []
    for folder_name, split in MISA_SPLITS.items():
        split_dir = source / folder_name
        if not split_dir.is_dir():
            continue
        for subject_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            subject_id = subject_dir.name
            image = _with_nifti_ending(subject_dir, subject_id)
            if image is None:
                raise InputError(
                    f"{subject_dir}: no image {subject_id}.nii.gz in this subject folder; "
                    f"add it or remove the folder."
                )
            label = _with_nifti_ending(subject_dir, f"{subject_id}_seg")
            if split != "test":
                label = _require_label(subject_id, label, subject_dir / f"{subject_id}_seg.nii.gz", folder_name)
            subjects.append(Subject(subject_id, image, label if split != "test" else None, split))
    return subjects


def _subject_id(path: Path) -> str:
    match = SUBJECT_ID.match(path.name)
    if not match:
        raise InputError(f"{path}: file name does not start with IBSR_<number>; "
                         "rename it, e.g. IBSR_01_ana_strip.nii.gz.")
    return match.group(1)


def find_nitrc(source: Path, fill: bool = False) -> list[Subject]:
    """NITRC IBSR V2.0 NIfTI: IBSR_XX/IBSR_XX_ana_strip.nii.gz + IBSR_XX_segTRI[_fill]_ana.nii.gz."""
    seg_suffix = "_segTRI_fill_ana" if fill else "_segTRI_ana"
    subjects = []
    images = sorted(p for ending in NIFTI_ENDINGS for p in source.rglob(f"IBSR_*_ana_strip{ending}"))
    for image in images:
        subject_id = _subject_id(image)
        label = _with_nifti_ending(image.parent, f"{subject_id}{seg_suffix}")
        label = _require_label(subject_id, label, image.parent / f"{subject_id}{seg_suffix}.nii.gz", "NITRC")
        subjects.append(Subject(subject_id, image, label, "train"))
    return subjects


def find_analyze(source: Path, fill: bool = False) -> list[Subject]:
    """NITRC Analyze: IBSR_XX/images/analyze/IBSR_XX_ana.img + IBSR_XX/segmentation/analyze/IBSR_XX_segTRI_ana.img."""
    seg_name = "segTRI_fill_ana" if fill else "segTRI_ana"
    subjects = []
    for image in sorted(source.rglob("IBSR_*_ana.img")):
        subject_id = _subject_id(image)
        if image.name != f"{subject_id}_ana.img":
            continue  # e.g. IBSR_01_segTRI_ana.img itself
        subject_root = image.parent.parent.parent if image.parent.name == "analyze" else image.parent
        candidates = sorted(subject_root.rglob(f"{subject_id}_{seg_name}.img"))
        label = _require_label(
            subject_id, candidates[0] if candidates else None,
            subject_root / "segmentation" / "analyze" / f"{subject_id}_{seg_name}.img", "NITRC",
        )
        subjects.append(Subject(subject_id, image, label, "train"))
    return subjects


def detect_layout(source: Path) -> str:
    """The layout of a source tree, from what it holds."""
    if any((source / name).is_dir() for name in MISA_SPLITS):
        return "misa"
    if any(True for ending in NIFTI_ENDINGS for _ in source.rglob(f"IBSR_*_ana_strip{ending}")):
        return "nitrc"
    if any(True for _ in source.rglob("IBSR_*_ana.img")):
        return "analyze"
    raise InputError(f"{source}: no IBSR18 layout found; expected {EXPECTED}, or pass --layout.")


def find_subjects(source: str | Path, layout: str = "auto", fill: bool = False) -> tuple[str, list[Subject]]:
    """(layout, subjects) of a source tree; refuses empty trees and duplicate subject IDs."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source}: source folder does not exist; pass the folder that holds IBSR18 ({EXPECTED}).")
    if layout == "auto":
        layout = detect_layout(source)
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout} is unknown; use auto, {', '.join(LAYOUTS)}.")
    finder = {"misa": find_misa, "nitrc": lambda s: find_nitrc(s, fill), "analyze": lambda s: find_analyze(s, fill)}
    subjects = finder[layout](source)
    if not subjects:
        raise InputError(f"{source}: no subjects found for layout {layout}; expected {EXPECTED}.")
    seen: dict[str, Path] = {}
    for subject in subjects:
        if subject.subject_id in seen:
            raise InputError(
                f"{subject.image}: subject {subject.subject_id} appears twice (also {seen[subject.subject_id]}); "
                f"remove one copy."
            )
        seen[subject.subject_id] = subject.image
    return layout, sorted(subjects, key=lambda s: s.subject_id)

"""The conversion manifest, `<raw dataset>/ibsr_manifest.json`: the one module that writes and reads it.

    tool           "ibsr-nnunet"
    created        when convert wrote it (ISO 8601, UTC)
    fingerprint    the conversion's identity (sha256 of the version, layout, label coding, preprocessing and every
                   source file's checksum): what every result records it was made from
    dataset        nnU-Net's dataset name, e.g. Dataset501_IBSR18
    source         the source tree converted;  layout: its layout (nitrc, misa, ...)
    label_files    which label files were read (segTRI, segTRI_fill, seg);  label_map: the coding, or "auto"
    preprocessing  the Preprocessing record applied to the images (n4, denoise, ...)
    split          {"policy": in words, "train": [ids], "heldout": [ids], "test": [ids], "folds": number}
    orientation    the axis codes most training images share, e.g. ["R", "A", "S"] (absent in older manifests)
    cases          one record per case: id, role, shape, spacing (mm), affine (4x4), label_scheme ({"name",
                   "mapping"} or null), label_counts (label value -> voxels, or null), image and label (the
                   source file: {"path", "sha256"}, or null)
    files          path inside the dataset -> {"sha256", "size", "mtime_ns"} of each file convert wrote (absent in
                   older manifests)
    versions       package -> version (null when not installed)

Written once by `convert` into the dataset it builds; read by every later step, which is refused in one sentence
when there is none or it is cut short. A hand-made manifest without split or cases holds none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Protocol

import numpy as np

from .atomic import write_json
from .errors import InputError
from .jsonfile import read_json_object

MANIFEST_FILE = "ibsr_manifest.json"
Role = Literal["train", "heldout", "test"]
ROLES: tuple[Role, ...] = ("train", "heldout", "test")
RECONVERT = "convert the dataset again with `ibsr-nnunet convert SOURCE --force`"


class Converted(Protocol):
    """A workspace (core/workspace.py imports this module, so it is named by what is used of it)."""

    @property
    def raw_dataset(self) -> Path: ...


@dataclass(frozen=True)
class ManifestCase:
    """One converted case as the manifest records it."""

    id: str
    role: Role
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: tuple[tuple[float, ...], ...]
    label_scheme: Optional[dict]  # {"name", "mapping"}; None for a test case
    label_counts: Optional[dict[str, int]]
    image: Optional[dict]  # the source file: {"path", "sha256"}
    label: Optional[dict]

    def as_record(self) -> dict:
        return {"id": self.id, "role": self.role, "shape": list(self.shape), "spacing": list(self.spacing),
                "affine": [list(row) for row in self.affine], "label_scheme": self.label_scheme,
                "label_counts": self.label_counts, "image": self.image, "label": self.label}


@dataclass(frozen=True)
class Split:
    """Which cases train, which are held out (labelled, scored) and which are test cases; the policy in words."""

    policy: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    test: tuple[str, ...]
    folds: int


@dataclass(frozen=True)
class Manifest:
    """What ibsr_manifest.json holds (the keys of this module's docstring)."""

    fingerprint: str
    dataset: str
    source: str
    layout: str
    label_files: str
    label_map: str
    preprocessing: dict
    split: Split
    orientation: Optional[tuple[str, ...]]
    cases: tuple[ManifestCase, ...]
    files: Optional[dict[str, dict]]
    versions: dict
    created: str
    tool: str = "ibsr-nnunet"

    def case_ids(self, role: Optional[Role] = None) -> tuple[str, ...]:
        """The case IDs of one role, in the split's order; every case's with no role."""
        if role is None:
            return tuple(case.id for case in self.cases)
        return tuple(getattr(self.split, role))

    @property
    def training_cases(self) -> tuple[ManifestCase, ...]:
        return tuple(case for case in self.cases if case.role == "train")

    @property
    def training_axcodes(self) -> tuple[str, ...]:
        """The axis codes of the training images: recorded by `convert`, or the ones most training cases' affines
        share in a manifest written before it recorded them."""
        if self.orientation:
            return self.orientation
        from .orientation import common_axcodes  # nibabel, only for manifests that predate the record

        return common_axcodes([np.array(case.affine) for case in self.training_cases])

    @property
    def training_spacing(self) -> tuple[float, ...]:
        """The median voxel spacing (mm) of the training cases, axis by axis in the training orientation."""
        from .orientation import towards  # nibabel

        axcodes = self.training_axcodes
        return tuple(float(s) for s in np.median(
            [towards(np.array(case.affine), axcodes).sizes(case.spacing) for case in self.training_cases], axis=0))

    def as_record(self) -> dict:
        record = {"tool": self.tool, "created": self.created, "fingerprint": self.fingerprint,
                  "dataset": self.dataset, "source": self.source, "layout": self.layout,
                  "label_files": self.label_files, "label_map": self.label_map, "preprocessing": self.preprocessing,
                  "split": {"policy": self.split.policy, "train": list(self.split.train),
                            "heldout": list(self.split.heldout), "test": list(self.split.test),
                            "folds": self.split.folds},
                  "orientation": list(self.orientation) if self.orientation is not None else None,
                  "cases": [case.as_record() for case in self.cases], "versions": self.versions}
        if self.files is not None:
            record["files"] = self.files
        return record


def manifest_path(dataset: Path) -> Path:
    """The manifest of a converted dataset folder (nnU-Net's raw dataset, or the folder `convert` builds it in)."""
    return Path(dataset) / MANIFEST_FILE


def write_manifest(dataset: Path, manifest: Manifest) -> None:
    write_json(manifest_path(dataset), manifest.as_record())


def read_manifest(ws: Converted) -> Manifest:
    """The workspace's conversion manifest, refused in one sentence when there is no converted dataset, or when it
    is cut short or not a manifest."""
    path = manifest_path(ws.raw_dataset)
    if not path.is_file():
        raise InputError(f"no converted dataset at {ws.raw_dataset}; run `ibsr-nnunet convert SOURCE` first.")
    return parse_manifest(path, read_json_object(path, RECONVERT, "a conversion manifest"))


def read_manifest_if_any(dataset: Path) -> Optional[Manifest]:
    """The manifest of a dataset folder, or None when it has none or it cannot be read (convert then rebuilds)."""
    path = manifest_path(dataset)
    try:
        return parse_manifest(path, read_json_object(path, RECONVERT, "a conversion manifest"))
    except InputError:
        return None


def parse_manifest(path: Path, saved: dict) -> Manifest:
    """A manifest from the content of `path`; InputError naming the file and the field that is wrong."""
    try:
        split = saved.get("split") or {}
        cases = tuple(parse_case(case) for case in saved.get("cases") or ())
        orientation = saved.get("orientation")
        files = saved.get("files")
        return Manifest(
            fingerprint=_text(saved["fingerprint"]), dataset=str(saved.get("dataset", "")),
            source=str(saved.get("source", "")), layout=str(saved.get("layout", "")),
            label_files=str(saved.get("label_files", "")), label_map=str(saved.get("label_map", "")),
            preprocessing=dict(saved.get("preprocessing") or {}),
            split=Split(str(split.get("policy", "")), *(tuple(map(str, split.get(role) or ())) for role in ROLES),
                        folds=int(split.get("folds") or 0)),
            orientation=tuple(map(str, orientation)) if orientation else None, cases=cases,
            files=dict(files) if isinstance(files, dict) else None, versions=dict(saved.get("versions") or {}),
            created=str(saved.get("created", "")), tool=str(saved.get("tool", "ibsr-nnunet")))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path} is not a conversion manifest ({type(err).__name__}: {err}); {RECONVERT}.") from None


def _text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"fingerprint {value!r} is not a checksum")
    return value


def parse_case(saved: dict) -> ManifestCase:
    """One case of the manifest's `cases` list."""
    role = saved["role"]
    if role not in ROLES:
        raise ValueError(f"case {saved.get('id')!r} has role {role!r}, not one of {', '.join(ROLES)}")
    return ManifestCase(id=str(saved["id"]), role=role, shape=tuple(int(n) for n in saved.get("shape") or ()),
                      spacing=tuple(float(s) for s in saved["spacing"]),
                      affine=tuple(tuple(float(v) for v in row) for row in saved.get("affine") or ()),
                      label_scheme=saved.get("label_scheme"), label_counts=saved.get("label_counts"),
                      image=saved.get("image"), label=saved.get("label"))

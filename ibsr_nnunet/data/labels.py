"""Tissue labels: nnU-Net's target scheme, the source codings we recognise, and mapping one onto the other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.vocabulary import NNUNET_LABELS, TISSUES

TARGET_VALUES = frozenset(NNUNET_LABELS.values())

LABEL_MAP_HINT = "pass an explicit mapping, e.g. --label-map 128=CSF,192=GM,254=WM"


@dataclass(frozen=True)
class LabelScheme:
    """A source coding: source value -> target value (0 always maps to background)."""

    name: str
    mapping: dict[int, int]

    def describe(self) -> str:
        inverse = {v: k for k, v in NNUNET_LABELS.items()}
        return ", ".join(f"{src}={inverse[dst]}" for src, dst in sorted(self.mapping.items()))


# The codings IBSR18 ships in: MISA course files use 1/2/3, NITRC's segTRI files use 128/192/254.
KNOWN_SCHEMES = (
    LabelScheme("misa", {0: 0, 1: 1, 2: 2, 3: 3}),
    LabelScheme("nitrc", {0: 0, 128: 1, 192: 2, 254: 3}),
)


def parse_label_map(text: str) -> LabelScheme:
    """Parse `VALUE=CSF,VALUE=GM,VALUE=WM` (any order; 0 is background) into a scheme."""
    mapping: dict[int, int] = {0: 0}
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, sep, tissue = item.partition("=")
        tissue = tissue.strip().upper()
        if not sep or tissue not in TISSUES.values():
            raise InputError(f"--label-map item '{item}' is not VALUE=CSF, VALUE=GM or VALUE=WM; {LABEL_MAP_HINT}.")
        try:
            source_value = int(value)
        except ValueError:
            raise InputError(f"--label-map item '{item}' needs an integer value before '='; "
                             f"{LABEL_MAP_HINT}.") from None
        if source_value in mapping:
            raise InputError(f"--label-map names value {source_value} twice; {LABEL_MAP_HINT}.")
        mapping[source_value] = NNUNET_LABELS[tissue]
    if sorted(mapping.values()) != [0, 1, 2, 3]:
        raise InputError(f"--label-map '{text}' must name each of CSF, GM and WM exactly once; {LABEL_MAP_HINT}.")
    return LabelScheme("explicit", mapping)


def value_counts(array: np.ndarray) -> dict[int, int]:
    """Voxel count per distinct value. Background dominates label maps (~88 % in IBSR), so count the
    non-zero voxels only: 3× faster than one bincount over all 8 M voxels, 4× faster than np.unique."""
    flat = array.ravel(order="K")
    foreground = flat[flat != 0]
    counts = {0: flat.size - foreground.size} if foreground.size < flat.size else {}
    if foreground.size:
        low, high = int(foreground.min()), int(foreground.max())
        if high - low <= 1 << 16 and np.issubdtype(foreground.dtype, np.integer):
            # in int64: `value - low` overflows the label's own dtype (int8 -100..100, int16 -30000..30000)
            bins = np.bincount(foreground.astype(np.int64) - low)
            counts.update({int(v) + low: int(bins[v]) for v in np.flatnonzero(bins)})
        else:
            values, numbers = np.unique(foreground, return_counts=True)
            counts.update({v.item(): int(n) for v, n in zip(values, numbers)})
    return dict(sorted(counts.items()))


def mapped_counts(source_counts: dict[int, int], scheme: LabelScheme) -> dict[int, int]:
    """Target-value counts after `apply_scheme`, from the source counts (no second pass over the voxels)."""
    counts: dict[int, int] = {}
    for value, count in source_counts.items():
        target = scheme.mapping[value]
        counts[target] = counts.get(target, 0) + count
    return counts


def integral_labels(array: np.ndarray, path: str) -> np.ndarray:
    """The label array as integers; a float file with fractional values is refused."""
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
        raise InputError(
            f"{path}: label file holds non-integer values (dtype {array.dtype}); "
            f"re-export it as an integer label map (e.g. with nearest-neighbour resampling)."
        )
    return array.astype(np.int32)


def detect_scheme(counts: dict[int, int], path: str, explicit: LabelScheme | None = None) -> LabelScheme:
    """The scheme that explains every value in `counts`, or a refusal that names the values found."""
    found = set(counts)
    candidates = [explicit] if explicit else KNOWN_SCHEMES
    for scheme in candidates:
        if found <= set(scheme.mapping):
            return scheme
    unknown = sorted(found - set(explicit.mapping)) if explicit else sorted(found)
    if explicit:
        raise InputError(
            f"{path}: label values {unknown} are not in --label-map ({explicit.describe()}); "
            f"add them to the mapping or fix the file."
        )
    raise InputError(
        f"{path}: unknown label values {unknown}; known codings are 0/1/2/3 and 0/128/192/254 "
        f"(background/CSF/GM/WM); {LABEL_MAP_HINT}."
    )


def apply_scheme(array: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Map source values to 0..3 as uint8."""
    if scheme.mapping == {0: 0, 1: 1, 2: 2, 3: 3}:
        return array.astype(np.uint8)
    out = np.zeros(array.shape, dtype=np.uint8)
    for source_value, target_value in scheme.mapping.items():
        if target_value:
            out[array == source_value] = target_value
    return out


def require_all_tissues(counts: dict[int, int], path: str) -> None:
    """A labelled case must contain CSF, GM and WM, or nnU-Net would learn a different problem."""
    missing = [name for name, value in NNUNET_LABELS.items() if value and counts.get(value, 0) == 0]
    if missing:
        raise InputError(
            f"{path}: tissue class {', '.join(missing)} is absent from this labelled case; "
            f"check the label file (a binary mask or wrong file?) or pass --label-map if its coding differs."
        )

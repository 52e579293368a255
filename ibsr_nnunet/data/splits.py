"""Deterministic data splits: the held-out subset of a source without one, and nnU-Net's cross-validation folds."""

from __future__ import annotations

import random

from ..core.errors import InputError
from ..core.vocabulary import N_FOLDS

SPLIT_SEED = 12345


def heldout_subset(subject_ids: list[str], fraction: float = 0.2, seed: int = SPLIT_SEED) -> list[str]:
    """A fixed held-out subset (about `fraction`, at least one) of labelled subjects, the same on every machine."""
    ordered = sorted(subject_ids)
    count = max(1, round(len(ordered) * fraction))
    if len(ordered) - count < 2:
        raise InputError(
            f"only {len(ordered)} labelled subjects found: too few to hold {count} out and still train; "
            f"add subjects or provide a Validation_Set."
        )
    return sorted(random.Random(seed).sample(ordered, count))


def cross_validation_folds(subject_ids: list[str], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """nnU-Net's splits_final.json content: `n_folds` disjoint validation sets that cover every training subject."""
    ordered = sorted(subject_ids)
    if len(ordered) < 2:
        raise InputError(f"only {len(ordered)} training subject(s): cross-validation needs at least 2; add subjects.")
    n_folds = min(n_folds, len(ordered))
    shuffled = ordered[:]
    random.Random(seed).shuffle(shuffled)
    folds = []
    for fold in range(n_folds):
        val = sorted(shuffled[fold::n_folds])
        folds.append({"train": [s for s in ordered if s not in val], "val": val})
    return folds

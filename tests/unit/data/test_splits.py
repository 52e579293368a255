import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.data.splits import cross_validation_folds, heldout_subset

IDS = [f"IBSR_{i:02d}" for i in (1, 3, 4, 5, 6, 7, 8, 9, 16, 18)]


def test_heldout_is_deterministic_and_a_fifth():
    first = heldout_subset(IDS)
    assert first == heldout_subset(list(reversed(IDS)))
    assert len(first) == 2 and set(first) <= set(IDS)


def test_folds_disjoint_and_covering():
    folds = cross_validation_folds(IDS[:8])
    assert len(folds) == 5
    vals = [set(f["val"]) for f in folds]
    assert sorted(len(v) for v in vals) == [1, 1, 2, 2, 2]
    assert set().union(*vals) == set(IDS[:8])
    for i, fold in enumerate(folds):
        assert not set(fold["train"]) & vals[i]
        assert set(fold["train"]) | vals[i] == set(IDS[:8])
        for j in range(i):
            assert not vals[i] & vals[j]
    assert folds == cross_validation_folds(list(reversed(IDS[:8])))


def test_three_subjects_give_three_folds():
    assert len(cross_validation_folds(IDS[:3])) == 3


@pytest.mark.parametrize("split, subjects, message", [
    (cross_validation_folds, 1, r"^only 1 training subject\(s\): cross-validation needs at least 2; add subjects\.$"),
    (cross_validation_folds, 0, r"^only 0 training subject\(s\): cross-validation needs at least 2"),
    (heldout_subset, 2, r"^only 2 labelled subjects found: too few to hold 1 out and still train; add subjects or "
                        r"provide a Validation_Set\.$"),
    (heldout_subset, 1, r"^only 1 labelled subjects found: too few to hold 1 out"),
], ids=["folds-1", "folds-0", "heldout-2", "heldout-1"])
def test_too_few_subjects(split, subjects, message):
    with pytest.raises(InputError, match=message):
        split(IDS[:subjects])

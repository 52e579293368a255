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


def test_too_few_subjects():
    assert len(cross_validation_folds(IDS[:3])) == 3
    with pytest.raises(InputError):
        cross_validation_folds(IDS[:1])
    with pytest.raises(InputError):
        heldout_subset(IDS[:2])

import numpy as np
import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.data.labels import (
    KNOWN_SCHEMES,
    apply_scheme,
    detect_scheme,
    integral_labels,
    parse_label_map,
    require_all_tissues,
    value_counts,
)


@pytest.mark.parametrize("values, scheme", [
    ({0: 5, 1: 2, 2: 3, 3: 4}, "misa"),
    ({0: 5, 128: 2, 192: 3, 254: 4}, "nitrc"),
    ({0: 5, 2: 3, 3: 1}, "misa"),  # a subset still names its scheme; absent tissue is checked separately
])
def test_detect_known_schemes(values, scheme):
    assert detect_scheme(values, "x.nii.gz").name == scheme


@pytest.mark.parametrize("values", [{0: 1, 1: 1, 4: 1}, {0: 1, 255: 1}, {0: 1, 1: 1, 128: 1}, {-1: 1, 0: 1}])
def test_unknown_values_refused_with_values_and_fix(values):
    with pytest.raises(InputError) as err:
        detect_scheme(values, "sub/IBSR_01_seg.nii.gz")
    message = str(err.value)
    assert "sub/IBSR_01_seg.nii.gz" in message and "--label-map" in message
    assert str(sorted(values)) in message


def test_nitrc_mapping_applied():
    source = np.array([0, 128, 192, 254, 254], dtype=np.int16)
    mapped = apply_scheme(source, KNOWN_SCHEMES[1])
    assert mapped.dtype == np.uint8 and mapped.tolist() == [0, 1, 2, 3, 3]


@pytest.mark.parametrize("text, expected", [
    ("10=CSF,20=GM,30=WM", {0: 0, 10: 1, 20: 2, 30: 3}),
    ("30=wm, 10=csf, 20=gm", {0: 0, 10: 1, 20: 2, 30: 3}),
])
def test_parse_label_map(text, expected):
    assert parse_label_map(text).mapping == expected


@pytest.mark.parametrize("text", ["10=CSF,20=GM", "10=CSF,20=GM,30=XX", "a=CSF,20=GM,30=WM", "10=CSF,10=GM,30=WM",
                                  "10=CSF,20=CSF,30=WM"])
def test_bad_label_map_refused(text):
    with pytest.raises(InputError, match="--label-map"):
        parse_label_map(text)


def test_explicit_map_rejects_values_outside_it():
    scheme = parse_label_map("10=CSF,20=GM,30=WM")
    with pytest.raises(InputError, match=r"\[40\]"):
        detect_scheme({0: 1, 10: 1, 40: 1}, "f.nii.gz", scheme)


def test_value_counts_matches_unique():
    rng = np.random.default_rng(1)
    array = rng.integers(-3, 300, size=(17, 9, 5)).astype(np.int16)
    values, counts = np.unique(array, return_counts=True)
    assert value_counts(array) == dict(zip(values.tolist(), counts.tolist()))


def test_float_labels():
    assert integral_labels(np.array([0.0, 1.0, 3.0]), "f").dtype.kind == "i"
    with pytest.raises(InputError, match="non-integer"):
        integral_labels(np.array([0.0, 1.5]), "f")


def test_absent_tissue_named():
    require_all_tissues({0: 3, 1: 1, 2: 1, 3: 1}, "f")
    with pytest.raises(InputError, match="CSF, WM"):
        require_all_tissues({0: 3, 2: 1}, "f.nii.gz")


@pytest.mark.parametrize("dtype, low, high", [(np.int8, -100, 100), (np.int16, -30000, 30000), (np.uint16, 2, 65535),
                                              (np.int32, -(2 ** 31), 2 ** 31 - 1)])
def test_label_values_are_counted_in_any_integer_dtype_and_range(dtype, low, high):
    array = np.array([0, 0, 0, low, high, high, 1], dtype=dtype)
    assert value_counts(array) == dict(sorted({0: 3, low: 1, high: 2, 1: 1}.items()))

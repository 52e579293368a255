import nibabel as nib
import numpy as np
import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.data.phantom import DEMO_SHAPE, FULL_SHAPE, SMALL_SHAPE, make_subject, misa_split, write_phantoms


def test_deterministic_per_seed():
    a, b, c = make_subject(2, "small", 7), make_subject(2, "small", 7), make_subject(2, "small", 8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_anatomy_is_ibsr_like():
    subject = make_subject(1, "small", 0)
    counts = np.bincount(subject.labels.ravel(), minlength=4)
    brain = counts[1:].sum()
    assert subject.image.shape == SMALL_SHAPE and subject.image.dtype == np.int16
    assert np.all(subject.image[subject.labels == 0] == 0)  # zero outside the brain
    assert np.all(subject.image[subject.labels > 0] > 0)
    assert 0.01 < counts[1] / brain < 0.12  # CSF a small fraction
    assert counts[2] > counts[3] > counts[1]  # GM > WM > CSF, as in IBSR
    means = [subject.image[subject.labels == t].mean() for t in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1 contrast


def test_small_size_is_unchanged_by_the_demo_size():
    # tests elsewhere pin numbers measured on this phantom (seed 0, subject 1)
    subject = make_subject(1, "small", 0)
    assert np.bincount(subject.labels.ravel(), minlength=4).tolist() == [112144, 1062, 11492, 6374]
    assert np.bincount(subject.labels_fill.ravel(), minlength=4).tolist() == [112144, 98, 12456, 6374]


def test_demo_size_has_resolvable_csf_and_stays_ibsr_like():
    demo, small = make_subject(1, "demo", 0), make_subject(1, "small", 0)
    assert demo.image.shape == DEMO_SHAPE and np.array_equal(demo.affine, small.affine)
    # the same brain (the same random draws); only the CSF is wider
    assert np.array_equal(demo.labels == 0, small.labels == 0)
    counts = np.bincount(demo.labels.ravel(), minlength=4)
    assert counts.tolist() == [112144, 3449, 9355, 6124]
    assert counts[2] > counts[3] > counts[1]  # CSF still the smallest class
    assert 3449 / (3449 + 9355 + 6124) == pytest.approx(0.1822, abs=1e-4)  # vs 1062 / 18928 = 5.6 % in small
    # the fill variant marks sulcal CSF grey: only the ventricles (1.5× the small ones) stay CSF
    assert np.bincount(demo.labels_fill.ravel(), minlength=4).tolist() == [112144, 372, 12432, 6124]
    means = [demo.image[demo.labels == t].mean() for t in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_demo_phantom_holds_out_five(tmp_path):
    from ibsr_nnunet.demo import PHANTOM_HELD_OUT, PHANTOM_SUBJECTS

    assert (PHANTOM_SUBJECTS, PHANTOM_HELD_OUT) == (12, 5)
    assert misa_split(12, validation=5) == ["Training_Set"] * 5 + ["Validation_Set"] * 5 + ["Test_Set"] * 2
    write_phantoms(tmp_path, PHANTOM_SUBJECTS, layout="misa", size="demo", validation=PHANTOM_HELD_OUT)
    held_out = sorted(p.name for p in (tmp_path / "Validation_Set").iterdir())
    assert held_out == ["IBSR_06", "IBSR_07", "IBSR_08", "IBSR_09", "IBSR_10"]
    assert sorted(p.name for p in (tmp_path / "Test_Set").iterdir()) == ["IBSR_11", "IBSR_12"]


def test_misa_split_refuses_too_few_to_train():
    with pytest.raises(InputError, match="too few to hold 5 out"):
        misa_split(7, validation=5)


def test_full_size_geometry():
    subject = make_subject(1, "full", 0)
    assert subject.image.shape == FULL_SHAPE
    assert np.allclose(np.diag(subject.affine)[:3], (0.9375, 1.5, 0.9375))


@pytest.mark.parametrize("layout, files, codes", [
    ("misa", ["Training_Set/IBSR_01/IBSR_01.nii.gz", "Training_Set/IBSR_01/IBSR_01_seg.nii.gz",
              "Test_Set/IBSR_04/IBSR_04.nii.gz"], {0, 1, 2, 3}),
    ("nitrc", ["IBSR_01/IBSR_01_ana_strip.nii.gz", "IBSR_01/IBSR_01_segTRI_ana.nii.gz",
               "IBSR_01/IBSR_01_segTRI_fill_ana.nii.gz"], {0, 128, 192, 254}),
    ("analyze", ["IBSR_01/images/analyze/IBSR_01_ana.img", "IBSR_01/images/analyze/IBSR_01_ana.hdr",
                 "IBSR_01/segmentation/analyze/IBSR_01_segTRI_ana.img"], {0, 128, 192, 254}),
])
def test_layout_files_4d_int16_with_layout_codes(tmp_path, layout, files, codes):
    write_phantoms(tmp_path, subjects=4, layout=layout)
    for name in files:
        assert (tmp_path / name).is_file(), name
    label_file = next(tmp_path / f for f in files if "seg" in f and not f.endswith(".hdr"))
    label = nib.load(str(label_file))
    assert label.shape == (*SMALL_SHAPE, 1) and label.get_data_dtype() == np.int16
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) == codes
    if layout != "analyze":
        assert int(label.header["sform_code"]) == 1 and int(label.header["qform_code"]) == 0


def test_misa_split_proportions():
    assert misa_split(18).count("Training_Set") == 10 and misa_split(18).count("Validation_Set") == 5
    assert misa_split(8) == ["Training_Set"] * 5 + ["Validation_Set"] * 2 + ["Test_Set"]

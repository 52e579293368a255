"""The converter on real files: the shared IBSR18 volumes, phantoms in every layout, and every bad input."""

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import load, save_nifti
from ibsr_nnunet.core import checksums
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.manifest import read_manifest
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.convert import ConvertOptions, convert, dataset_json
from ibsr_nnunet.data.labels import parse_label_map
from ibsr_nnunet.data.phantom import make_subject
from ibsr_nnunet.data.preprocess import Preprocessing


@pytest.mark.parametrize("layout", ["misa", "nitrc", "analyze"])
def test_phantom_layouts(phantom_root, tmp_path, layout):
    ws = Workspace.open(tmp_path / "ws")
    result = convert(phantom_root / layout, ws, ConvertOptions(jobs=2))
    assert result.manifest.as_record()["layout"] == layout
    records = {r["id"]: r for r in result.manifest.as_record()["cases"]}
    for case, record in records.items():
        if record["label"] is None:
            continue
        expected = np.bincount(make_subject(int(case[5:]), "small", 0).labels.ravel(), minlength=4)
        folder = "labelsTr" if record["role"] == "train" else "labelsTs"
        written = np.asarray(load(ws.raw_dataset / folder / f"{case}.nii.gz").dataobj)
        assert np.bincount(written.ravel(), minlength=4).tolist() == expected.tolist()
        assert record["label_scheme"]["name"] == ("misa" if layout == "misa" else "nitrc")
    if layout == "misa":
        assert result.manifest.as_record()["split"]["policy"] == "source Validation_Set held out"
        assert result.manifest.as_record()["split"]["heldout"] == ["IBSR_06", "IBSR_07"]
    else:
        assert len(result.manifest.split.heldout) == 2 and result.manifest.split.test == ()
    spacing = records["IBSR_02"]["spacing"]
    assert spacing == pytest.approx([4.0, 6.0, 4.0])  # IBSR_02 uses the 1.0 mm in-plane group, ×4 when small


def test_fill_variant_and_explicit_label_map(phantom_root, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    options = ConvertOptions(jobs=1, fill=True, label_map=parse_label_map("128=CSF,192=GM,254=WM"))
    result = convert(phantom_root / "nitrc", ws, options)
    record = next(r for r in result.manifest.as_record()["cases"] if r["id"] == "IBSR_01")
    expected = np.bincount(make_subject(1, "small", 0).labels_fill.ravel(), minlength=4)
    assert [record["label_counts"][str(v)] for v in range(4)] == expected.tolist()
    assert result.manifest.as_record()["label_files"] == "segTRI_fill" and record["label_scheme"]["name"] == "explicit"


def test_failed_force_keeps_old_dataset_and_stale_builds_are_removed(misa_copy, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    first = convert(misa_copy, ws, ConvertOptions(jobs=2))
    stale = ws.nnunet_raw / ".tmp-Dataset501_IBSR18-999999999-deadbeef"
    stale.mkdir()
    _break("unknown labels", misa_copy)  # refused inside the build, after the stale folder is swept
    with pytest.raises(InputError):
        convert(misa_copy, ws, ConvertOptions(jobs=2, force=True))
    assert json.loads(ws.manifest.read_text())["fingerprint"] == first.manifest.as_record()["fingerprint"]
    assert sorted(p.name for p in ws.nnunet_raw.iterdir()) == ["Dataset501_IBSR18"]


def test_preprocessing_recorded(misa_copy, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    result = convert(misa_copy, ws, ConvertOptions(jobs=2, preprocessing=Preprocessing(n4=True, denoise=True)))
    assert result.manifest.preprocessing["n4"] and result.manifest.preprocessing["denoise"]
    written = load(ws.raw_dataset / "imagesTr" / "IBSR_01_0000.nii.gz")
    image = np.asarray(written.dataobj)
    labels = np.asarray(load(ws.raw_dataset / "labelsTr" / "IBSR_01.nii.gz").dataobj)
    assert written.get_data_dtype() == np.float32 and np.all(image[labels == 0] == 0) and np.all(np.isfinite(image))
    source = make_subject(1, "small", 0).image
    assert not np.array_equal(image, source)  # preprocessing changed the voxels


# ---- bad input: one sentence naming the file and the fix, and nothing written ----------------------------------

def _rewrite_label(source: Path, case: str, transform) -> Path:
    path = source / "Training_Set" / case / f"{case}_seg.nii.gz"
    original = nib.load(str(path))
    data, affine = transform(np.asarray(original.dataobj), original.affine.copy())
    save_nifti(path, data, affine)
    return path


def _rewrite_image(source: Path, case: str, transform) -> Path:
    path = source / "Training_Set" / case / f"{case}.nii.gz"
    original = nib.load(str(path))
    save_nifti(path, transform(np.asarray(original.dataobj)), original.affine)
    return path


def _break(kind: str, source: Path) -> str:
    """Break the MISA phantom tree in one way; returns the text the refusal must name."""
    if kind == "missing label":
        path = source / "Training_Set/IBSR_02/IBSR_02_seg.nii.gz"
        path.unlink()
        return str(path)
    if kind == "shape mismatch":
        return str(_rewrite_label(source, "IBSR_03", lambda d, a: (d[:, :, :-1], a)))
    if kind == "affine mismatch":
        return str(_rewrite_label(source, "IBSR_03", lambda d, a: (d, a + np.diag([0, 0, 0.01, 0]))))
    if kind == "unknown labels":
        return str(_rewrite_label(source, "IBSR_04", lambda d, a: (np.where(d == 3, 4, d).astype(np.int16), a)))
    if kind == "float labels":
        return str(_rewrite_label(source, "IBSR_04", lambda d, a: (d.astype(np.float32) * 0.5, a)))
    if kind == "absent tissue":
        return str(_rewrite_label(source, "IBSR_05", lambda d, a: (np.where(d == 1, 2, d).astype(np.int16), a)))
    if kind == "nan image":
        def with_nan(d):
            d = d.astype(np.float32)
            d[10, 10, 10] = np.nan
            return d
        return str(_rewrite_image(source, "IBSR_01", with_nan))
    if kind == "truncated":
        path = source / "Training_Set/IBSR_02/IBSR_02.nii.gz"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return str(path)
    if kind == "5-D image":
        return str(_rewrite_image(source, "IBSR_01", lambda d: d[..., np.newaxis]))
    if kind == "4-D non-singleton":
        return str(_rewrite_image(source, "IBSR_01", lambda d: np.concatenate([d, d], axis=3)))
    if kind == "duplicate subject":
        shutil.copytree(source / "Training_Set/IBSR_01", source / "Test_Set/IBSR_01")
        return "IBSR_01"
    raise AssertionError(kind)


BAD_INPUTS = {
    "missing label": "missing label file",
    "shape mismatch": "shape",
    "affine mismatch": "affine",
    "unknown labels": "unknown label values [0, 1, 2, 4]",
    "float labels": "non-integer",
    "absent tissue": "CSF is absent",
    "nan image": "NaN",
    "truncated": "corrupt",
    "5-D image": "5-D",
    "4-D non-singleton": "singleton",
    "duplicate subject": "appears twice",
}


def assert_nothing_written(ws: Workspace) -> None:
    assert not ws.raw_dataset.exists()
    assert not (ws.root / "workspace.json").exists()
    assert not ws.nnunet_raw.exists() or not any(ws.nnunet_raw.iterdir())


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_refused(kind, misa_copy, tmp_path):
    named = _break(kind, misa_copy)
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(InputError) as err:
        convert(misa_copy, ws, ConvertOptions(jobs=2))
    message = str(err.value)
    assert named in message and BAD_INPUTS[kind] in message
    assert "\n" not in message and message.rstrip().endswith(".")
    assert_nothing_written(ws)


@pytest.mark.parametrize("make_source, expected", [
    (lambda tmp: tmp.joinpath("empty").mkdir() or tmp / "empty", "no IBSR18 layout found"),
    (lambda tmp: tmp / "does-not-exist", "does not exist"),
])
def test_empty_or_unknown_source(tmp_path, make_source, expected):
    source = make_source(tmp_path)
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(InputError, match=expected) as err:
        convert(source, ws)
    assert str(source) in str(err.value)
    assert_nothing_written(ws)


def test_unwritable_workspace(misa_copy, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot be written"):
        convert(misa_copy, Workspace.open(tmp_path / "file" / "ws"))


def test_dataset_id_holding_a_different_dataset(phantom_root, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    convert(phantom_root / "misa", ws, ConvertOptions(jobs=2))
    with pytest.raises(InputError, match="already holds a different dataset.*--force"):
        convert(phantom_root / "nitrc", ws, ConvertOptions(jobs=2))
    replaced = convert(phantom_root / "nitrc", ws, ConvertOptions(jobs=2, force=True))
    assert replaced.manifest.as_record()["layout"] == "nitrc"
    assert json.loads(ws.manifest.read_text())["layout"] == "nitrc"


def test_dataset_json_counts_training_cases():
    assert dataset_json(3)["numTraining"] == 3


def wm_to_gm(path: Path) -> None:
    """A hand edit of a label map: every WM voxel (3) relabelled GM (2), same header."""
    image = load(path)
    labels = np.asarray(image.dataobj).copy()
    labels[labels == 3] = 2
    nib.save(nib.Nifti1Image(labels, image.affine, header=image.header), str(path))


def append_space(path: Path) -> None:
    path.write_text(path.read_text() + " ")


def preprocessed_splits(ws: Workspace) -> Path:
    return ws.preprocessed_dataset / "splits_final.json"


@pytest.mark.parametrize("edit, said", [
    (lambda ws: wm_to_gm(ws.raw_dataset / "labelsTs" / "IBSR_06.nii.gz"),
     r"labelsTs/IBSR_06\.nii\.gz changed since convert wrote it"),
    (lambda ws: wm_to_gm(ws.raw_dataset / "labelsTr" / "IBSR_01.nii.gz"), r"labelsTr/IBSR_01\.nii\.gz changed"),
    (lambda ws: shutil.copy(ws.raw_dataset / "imagesTr" / "IBSR_02_0000.nii.gz",
                            ws.raw_dataset / "imagesTr" / "IBSR_01_0000.nii.gz"),
     r"imagesTr/IBSR_01_0000\.nii\.gz changed"),
    (lambda ws: (ws.raw_dataset / "imagesTs" / "IBSR_08_0000.nii.gz").unlink(),
     r"imagesTs/IBSR_08_0000\.nii\.gz is missing"),
    (lambda ws: append_space(ws.raw_dataset / "dataset.json"), r"dataset\.json changed"),
    (lambda ws: append_space(ws.raw_dataset / "splits_final.json"), r"splits_final\.json changed"),
    (lambda ws: append_space(preprocessed_splits(ws)), r"nnUNet_preprocessed/.*splits_final\.json differs from"),
    (lambda ws: shutil.copy(ws.raw_dataset / "labelsTs" / "IBSR_06.nii.gz",
                            ws.raw_dataset / "labelsTs" / "IBSR_09.nii.gz"),
     r"labelsTs/IBSR_09\.nii\.gz was added after convert"),
])
def test_convert_refuses_a_dataset_changed_since_it_was_written(converted_copy, phantom_root, edit, said):
    ws = converted_copy
    edit(ws)
    with pytest.raises(InputError, match=rf"{ws.raw_dataset} was changed since convert wrote it: .*{said}.*--force"):
        convert(phantom_root / "misa", ws, ConvertOptions(jobs=1))
    redone = convert(phantom_root / "misa", ws, ConvertOptions(jobs=1, force=True))
    assert not redone.up_to_date
    assert convert(phantom_root / "misa", ws, ConvertOptions(jobs=1)).up_to_date  # intact again


def test_a_touched_but_unchanged_file_is_hashed_and_still_up_to_date(converted_copy, phantom_root):
    ws = converted_copy
    label = ws.raw_dataset / "labelsTs" / "IBSR_06.nii.gz"
    os.utime(label, ns=(0, 0))  # another time, same bytes: hashed, and found as written
    assert convert(phantom_root / "misa", ws, ConvertOptions(jobs=1)).up_to_date
    files = read_manifest(ws).files
    assert sorted(files) == sorted(
        [f"{folder}/{case}.nii.gz" for folder, cases in (("labelsTr", range(1, 6)), ("labelsTs", (6, 7)))
         for case in (f"IBSR_{i:02d}" for i in cases)]
        + [f"{folder}/IBSR_{i:02d}_0000.nii.gz"
           for folder, cases in (("imagesTr", range(1, 6)), ("imagesTs", (6, 7, 8))) for i in cases]
        + ["dataset.json", "splits_final.json"])
    assert files["dataset.json"]["sha256"] == checksums.sha256(ws.raw_dataset / "dataset.json")

"""The converter on real files: the shared IBSR18 volumes, phantoms in every layout, and every bad input."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import load
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.convert import ConvertOptions, convert

EXPECTED_DATASET_JSON = {
    "channel_names": {"0": "T1"},
    "labels": {"background": 0, "CSF": 1, "GM": 2, "WM": 3},
    "numTraining": 8,
    "file_ending": ".nii.gz",
    "name": "IBSR18",
    "description": "IBSR18 T1 brain MRI, tissue labels CSF/GM/WM (converted by ibsr-nnunet)",
}


def case_ids(folder: Path) -> list[str]:
    return sorted(p.name.replace("_0000.nii.gz", "").replace(".nii.gz", "") for p in folder.glob("*.nii.gz"))


@pytest.fixture(scope="module")
def real_dataset(shared_ibsr18, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ws-real"))
    result = convert(shared_ibsr18, ws, ConvertOptions(jobs=2))
    return ws, result


@pytest.mark.integration  # converts all 18 real volumes
def test_real_dataset_json_and_split(real_dataset):
    ws, result = real_dataset
    assert not result.up_to_date
    assert json.loads((ws.raw_dataset / "dataset.json").read_text()) == EXPECTED_DATASET_JSON
    split = result.manifest.as_record()["split"]
    assert split["heldout"] == ["IBSR_01", "IBSR_08"]  # the deterministic subset, pinned
    assert split["test"] == ["IBSR_02", "IBSR_10", "IBSR_15"]
    assert case_ids(ws.raw_dataset / "imagesTr") == case_ids(ws.raw_dataset / "labelsTr") == split["train"]
    assert len(split["train"]) == 8
    assert case_ids(ws.raw_dataset / "labelsTs") == split["heldout"]
    assert case_ids(ws.raw_dataset / "imagesTs") == sorted(split["heldout"] + split["test"])
    folds = json.loads((ws.raw_dataset / "splits_final.json").read_text())
    assert folds == json.loads((ws.preprocessed_dataset / "splits_final.json").read_text())
    assert len(folds) == 5
    assert sorted(c for f in folds for c in f["val"]) == split["train"]
    assert json.loads((ws.root / "workspace.json").read_text()) == {"dataset_id": 501}


@pytest.mark.integration  # converts all 18 real volumes
def test_real_labels_counts_equal_source(real_dataset, shared_manifest):
    ws, result = real_dataset
    split = result.manifest.as_record()["split"]
    for case in split["train"] + split["heldout"]:
        folder = "labelsTr" if case in split["train"] else "labelsTs"
        label = load(ws.raw_dataset / folder / f"{case}.nii.gz")
        array = np.asarray(label.dataobj)
        assert label.get_data_dtype() == np.uint8 and array.shape == (256, 128, 256)
        values, counts = np.unique(array, return_counts=True)
        assert values.tolist() == [0, 1, 2, 3]
        assert (dict(zip(values.tolist(), counts.tolist()))
                == shared_manifest[f"Training_Set/{case}/{case}_seg.nii.gz"]["counts"])


@pytest.mark.integration  # converts all 18 real volumes
def test_real_images_voxel_for_voxel_and_geometry(real_dataset, shared_ibsr18):
    ws, result = real_dataset
    for record in result.manifest.as_record()["cases"]:
        case = record["id"]
        source = load(Path(record["image"]["path"]))
        folder = "imagesTr" if record["role"] == "train" else "imagesTs"
        written = load(ws.raw_dataset / folder / f"{case}_0000.nii.gz")
        assert written.shape == source.shape[:3] and written.get_data_dtype() == np.int16
        assert np.array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj)[..., 0])
        assert np.allclose(written.affine, source.affine, atol=1e-5)
        if record["label"]:
            label_folder = "labelsTr" if record["role"] == "train" else "labelsTs"
            assert np.allclose(load(ws.raw_dataset / label_folder / f"{case}.nii.gz").affine, source.affine, atol=1e-5)


@pytest.mark.integration  # converts all 18 real volumes
def test_real_manifest_records_sources(real_dataset, shared_manifest):
    ws, result = real_dataset
    manifest = json.loads(ws.manifest.read_text())
    assert manifest["layout"] == "misa" and manifest["label_map"] == "auto"
    assert manifest["preprocessing"]["n4"] is False and manifest["versions"]["nnunetv2"]
    by_id = {c["id"]: c for c in manifest["cases"]}
    assert by_id["IBSR_16"]["image"]["sha256"] == shared_manifest["Training_Set/IBSR_16/IBSR_16.nii.gz"]["sha256"]
    assert by_id["IBSR_15"]["label"] is None and by_id["IBSR_15"]["role"] == "test"
    assert by_id["IBSR_07"]["label_scheme"]["name"] == "misa"
    assert by_id["IBSR_16"]["spacing"] == pytest.approx([0.8370536, 1.5, 0.8370536], abs=1e-6)


@pytest.mark.integration  # converts all 18 real volumes
def test_rerun_is_a_fast_noop_and_force_replaces(real_dataset, shared_ibsr18):
    ws, _ = real_dataset
    stamp = (ws.raw_dataset / "dataset.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = convert(shared_ibsr18, ws, ConvertOptions(jobs=2))
    assert again.up_to_date and time.perf_counter() - start < 3
    assert (ws.raw_dataset / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="--force"):
        convert(shared_ibsr18, ws, ConvertOptions(jobs=2, heldout_fraction=0.3))
    assert (ws.raw_dataset / "dataset.json").stat().st_mtime_ns == stamp

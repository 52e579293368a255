"""core/manifest.py: ibsr_manifest.json written and read back exactly; the training cases' axis codes and median
spacing; a cut-short or malformed manifest refused in one sentence."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.manifest import (
    Manifest,
    ManifestCase,
    Split,
    manifest_path,
    read_manifest,
    read_manifest_if_any,
    write_manifest,
)
from ibsr_nnunet.core.workspace import Workspace

RAS = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
LAS = ((-1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def case(case_id: str, role: str, spacing: tuple[float, ...], affine=RAS) -> ManifestCase:
    labelled = role != "test"
    return ManifestCase(id=case_id, role=role, shape=(4, 5, 6), spacing=spacing, affine=affine,
                      label_scheme={"name": "misa", "mapping": {"0": 0, "1": 1}} if labelled else None,
                      label_counts={"0": 100, "1": 20} if labelled else None,
                      image={"path": f"/src/{case_id}.nii.gz", "sha256": "a" * 64},
                      label={"path": f"/src/{case_id}_seg.nii.gz", "sha256": "b" * 64} if labelled else None)


def manifest(orientation=("R", "A", "S"), files=None) -> Manifest:
    cases = (case("IBSR_01", "train", (1.0, 1.5, 1.0)), case("IBSR_02", "train", (0.9, 1.5, 0.9)),
             case("IBSR_03", "train", (0.8, 3.0, 0.8), affine=LAS), case("IBSR_04", "heldout", (2.0, 2.0, 2.0)),
             case("IBSR_05", "test", (5.0, 5.0, 5.0)))
    return Manifest(fingerprint="f" * 64, dataset="Dataset501_IBSR18", source="/src", layout="misa",
                    label_files="seg", label_map="auto", preprocessing={"n4": False, "n4_iterations": [50, 50]},
                    split=Split("source Validation_Set held out", ("IBSR_01", "IBSR_02", "IBSR_03"), ("IBSR_04",),
                                ("IBSR_05",), folds=3),
                    orientation=orientation, cases=cases, files=files, versions={"numpy": "2.0", "torch": None},
                    created="2024-01-01T00:00:00+00:00")


@pytest.fixture
def ws(tmp_path) -> Workspace:
    workspace = Workspace(tmp_path / "ws")
    workspace.raw_dataset.mkdir(parents=True)
    return workspace


def test_a_written_manifest_reads_back_equal(ws):
    written = manifest(files={"dataset.json": {"sha256": "c" * 64, "size": 3, "mtime_ns": 7}})
    write_manifest(ws.raw_dataset, written)
    assert read_manifest(ws) == written
    saved = json.loads(manifest_path(ws.raw_dataset).read_text())
    assert saved["split"] == {"policy": "source Validation_Set held out", "train": ["IBSR_01", "IBSR_02", "IBSR_03"],
                              "heldout": ["IBSR_04"], "test": ["IBSR_05"], "folds": 3}
    assert saved["orientation"] == ["R", "A", "S"] and saved["cases"][3]["spacing"] == [2.0, 2.0, 2.0]


def test_training_spacing_is_the_median_of_the_training_cases_only(ws):
    write_manifest(ws.raw_dataset, manifest())
    assert read_manifest(ws).training_spacing == pytest.approx((0.9, 1.5, 0.9))  # held-out and test left out


def test_training_spacing_is_taken_in_the_training_orientation(ws):
    """A training case stored with its axes permuted (A, S, R) has its voxel sizes permuted back before the median."""
    ars = ((0.0, 0.0, 1.0, 0.0), (1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    cases = list(manifest().cases)
    cases[2] = case("IBSR_03", "train", (3.0, 0.8, 0.8), affine=ars)  # (R, A, S) = (0.8, 3.0, 0.8)
    write_manifest(ws.raw_dataset, dataclasses.replace(manifest(), cases=tuple(cases)))
    assert read_manifest(ws).training_spacing == pytest.approx((0.9, 1.5, 0.9))


def test_training_axcodes_recorded_or_read_from_the_training_affines():
    assert manifest(orientation=("L", "P", "S")).training_axcodes == ("L", "P", "S")
    assert manifest(orientation=None).training_axcodes == ("R", "A", "S")  # two of the three training cases


def test_case_ids_by_role(ws):
    write_manifest(ws.raw_dataset, manifest())
    read = read_manifest(ws)
    assert read.case_ids("train") == ("IBSR_01", "IBSR_02", "IBSR_03") and read.case_ids("test") == ("IBSR_05",)
    assert read.case_ids() == ("IBSR_01", "IBSR_02", "IBSR_03", "IBSR_04", "IBSR_05")
    assert [c.id for c in ws.cases("heldout", read)] == ["IBSR_04"]
    assert ws.cases("test", read)[0].label is None


def test_no_manifest_is_refused_with_the_command_to_run(ws):
    with pytest.raises(InputError, match=r"^no converted dataset at .*; run `ibsr-nnunet convert SOURCE` first\.$"):
        read_manifest(ws)
    assert read_manifest_if_any(ws.raw_dataset) is None


def test_a_cut_short_manifest_is_one_sentence(ws):
    write_manifest(ws.raw_dataset, manifest())
    path = manifest_path(ws.raw_dataset)
    path.write_text(path.read_text()[:100])
    with pytest.raises(InputError, match=rf"^{path} is not valid JSON \(cut short or edited by hand: .*\); convert "
                                         r"the dataset again with `ibsr-nnunet convert SOURCE --force`\.$"):
        read_manifest(ws)
    assert read_manifest_if_any(ws.raw_dataset) is None


@pytest.mark.parametrize("content, why", [
    ([1, 2], r"is not a conversion manifest \(not a JSON object\)"),
    ({"split": {}}, r"is not a conversion manifest \(KeyError: 'fingerprint'\)"),
    ({"fingerprint": "f" * 64, "cases": [{"id": "x", "role": "training", "spacing": [1, 1, 1]}]},
     r"is not a conversion manifest \(ValueError: case 'x' has role 'training', not one of train, heldout, test\)"),
    ({"fingerprint": "f" * 64, "cases": [{"id": "x", "role": "train"}]}, r"\(KeyError: 'spacing'\)"),
])
def test_a_malformed_manifest_is_one_sentence(ws, content, why):
    manifest_path(ws.raw_dataset).write_text(json.dumps(content))
    with pytest.raises(InputError, match=rf"{why}; convert the dataset again with `ibsr-nnunet convert SOURCE "
                                         rf"--force`\.$"):
        read_manifest(ws)


def test_a_manifest_with_only_a_fingerprint_has_no_cases(ws):
    manifest_path(ws.raw_dataset).write_text(json.dumps({"fingerprint": "e" * 64}))
    read = read_manifest(ws)
    assert read.fingerprint == "e" * 64 and read.cases == () and read.case_ids("train") == () and read.files is None

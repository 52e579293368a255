"""Model bundles of a baseline: `export` writes one zip of what `segment` needs, `segment --model FILE.zip` (or the
folder it was unpacked into) gives the same maps, warnings and volumes.csv as inside the training workspace, with a
fresh workspace; a bundle cut short, edited, of a newer format or naming a model wrongly is refused in one sentence.
(nnU-Net's bundles, and nnU-Net's own installer on them: tests/integration/test_presets.py.)"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import BASELINE, copy_workspace, invoke, said
from ibsr_nnunet.segment.bundle import CACHE_ENV, MANIFEST


@pytest.fixture(scope="module")
def scored(trained_baseline_ws, tmp_path_factory):
    """The session's trained unet2d__dice_ce, predicted and on a leaderboard, and its bundle."""
    root = tmp_path_factory.mktemp("bundles")
    ws = copy_workspace(trained_baseline_ws, root / "ws")
    assert invoke(ws, "baseline", "predict", "--model", "unet2d", "--loss", "dice_ce", "--device", "cpu").exit_code == 0
    board = invoke(ws, "leaderboard")
    assert board.exit_code == 0, board.output
    bundle = root / "out" / "unet2d.zip"
    done = invoke(ws, "export", BASELINE, "--output", str(bundle))
    assert done.exit_code == 0, done.output
    return ws, bundle, done


def scans(ws) -> list[Path]:
    return sorted((ws.raw_dataset / "imagesTs").glob("*_0000.nii.gz"))[:2]


def outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*_tissue.nii.gz"))}


def table(folder: Path) -> pd.DataFrame:
    """volumes.csv without what differs by where it was written (output folder) or how fast."""
    frame = pd.read_csv(folder / "volumes.csv")
    for column in ("output", "qc"):
        frame[column] = [Path(p).name for p in frame[column]]
    return frame.drop(columns=["seconds"])


def test_export_writes_one_zip_with_the_weights_and_records_and_no_training_data(scored):
    ws, bundle, done = scored
    assert f"wrote {bundle}: {BASELINE} (baseline)" in said(done)
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read(MANIFEST))
    run = f"ibsr_bundle/workspace/baselines/{BASELINE}"
    assert {f"{run}/best.pt", f"{run}/orientation.json", f"{run}/run.json", "ibsr_bundle/workspace/workspace.json",
            "ibsr_bundle/workspace/leaderboard.csv", "ibsr_bundle/workspace/training_volumes.json",
            f"ibsr_bundle/workspace/nnUNet_raw/{ws.dataset_name}/ibsr_manifest.json"} <= names
    assert f"{run}/checkpoint.pt" not in names  # a resume's state, not the model
    assert not any("imagesTr" in n or "labelsTr" in n or n.endswith(".nii.gz") for n in names)
    assert names == set(manifest["files"]) | {MANIFEST}
    assert (manifest["format"], manifest["model"], manifest["kind"]) == (1, BASELINE, "baseline")
    assert manifest["dataset"]["fingerprint"] == json.loads(
        (ws.raw_dataset / "ibsr_manifest.json").read_text())["fingerprint"]
    assert manifest["leaderboard"]["model"] == BASELINE and set(manifest["versions"]) == {
        "ibsr-nnunet", "nnunetv2", "torch"}
    listed = invoke(ws, "export", "--list")
    assert listed.exit_code == 0 and BASELINE in said(listed) and " MB" in said(listed)


def test_segment_from_the_bundle_equals_segment_in_the_workspace(scored, tmp_path, monkeypatch):
    ws, bundle, _ = scored
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    inside = invoke(ws, "segment", *map(str, scans(ws)), "--output", str(tmp_path / "inside"), "--model", BASELINE,
                    "--device", "cpu")
    assert inside.exit_code == 0, inside.output
    fresh = tmp_path / "fresh-workspace"
    elsewhere = invoke(fresh, "segment", *map(str, scans(ws)), "--output", str(tmp_path / "bundle"), "--model",
                       str(bundle), "--device", "cpu")
    assert elsewhere.exit_code == 0, elsewhere.output
    assert "installed model bundle" in said(elsewhere) and "held-out mean Dice" in said(elsewhere)
    assert not fresh.exists()  # nothing written where no workspace was
    ours, theirs = outputs(tmp_path / "bundle"), outputs(tmp_path / "inside")
    assert list(ours) == list(theirs) and len(ours) == 2
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])
    pd.testing.assert_frame_equal(table(tmp_path / "bundle"), table(tmp_path / "inside"))

    with zipfile.ZipFile(bundle) as archive:  # unpacked by hand: the folder is a bundle too
        archive.extractall(tmp_path / "unpacked")
    again = invoke(None, "segment", *map(str, scans(ws)), "--output", str(tmp_path / "folder"), "--model",
                   str(tmp_path / "unpacked"), "--device", "cpu")
    assert again.exit_code == 0, again.output
    for name, labels in outputs(tmp_path / "folder").items():
        np.testing.assert_array_equal(labels, theirs[name])


def rewritten(bundle: Path, target: Path, *, manifest=None, replace=None, extra=None) -> Path:
    """A copy of `bundle` with its manifest changed, one file's bytes replaced, or one file added."""
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == MANIFEST and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            if replace and info.filename == replace[0]:
                data = replace[1]
            copy.writestr(info, data)
        for name, data in (extra or {}).items():
            copy.writestr(name, data)
    return target


@pytest.mark.parametrize("damage, refusal", [
    ("cut", r"is not a usable model bundle: it cannot be read as a zip with ibsr_bundle/bundle\.json \(cut short or "
            r"damaged"),
    ("weights", r"is not a usable model bundle: ibsr_bundle/workspace/baselines/unet2d__dice_ce/best\.pt does not "
                r"hold the bytes its manifest lists \(damaged or edited\); export it again with `ibsr-nnunet export`"),
    ("format", r"is a model bundle of format 2, newer than this ibsr-nnunet reads \(1\); upgrade ibsr-nnunet"),
    ("name", r"is not a usable model bundle: its model '\.\./unet2d__dice_ce' is not a baseline model name"),
    ("outside", r"its manifest lists '\.\./evil\.py', which is not a file of a bundle"),
    ("unlisted", r"it holds 'ibsr_bundle/workspace/extra\.py', which its manifest does not list"),
])
def test_a_damaged_or_foreign_bundle_is_refused_in_one_sentence(scored, tmp_path, monkeypatch, damage, refusal):
    ws, bundle, _ = scored
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    bad = tmp_path / "bad.zip"
    if damage == "cut":
        bad.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    elif damage == "weights":
        rewritten(bundle, bad, replace=(f"ibsr_bundle/workspace/baselines/{BASELINE}/best.pt", b"not the weights"))
    elif damage == "format":
        rewritten(bundle, bad, manifest=lambda m: {**m, "format": 2})
    elif damage == "name":
        rewritten(bundle, bad, manifest=lambda m: {**m, "model": f"../{BASELINE}"})
    elif damage == "outside":
        rewritten(bundle, bad, manifest=lambda m: {**m, "files": {**m["files"], "../evil.py": {
            "sha256": "0" * 64, "bytes": 1}}})
    else:
        rewritten(bundle, bad, extra={"ibsr_bundle/workspace/extra.py": b"print('hi')"})
    result = invoke(None, "segment", str(scans(ws)[0]), "--output", str(tmp_path / "out"), "--model", str(bad),
                    "--device", "cpu")
    assert result.exit_code == 1
    assert re.search(refusal, said(result)), said(result)
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").glob("*/.installed"))  # nothing installed, nothing half-written
    assert not list((tmp_path / "cache").glob(".*"))


def test_export_refusals(scored, tmp_path):
    ws, _, _ = scored
    wrong = invoke(ws, "export", BASELINE, "--output", str(tmp_path / "b.tar"))
    assert wrong.exit_code == 1 and "must be a .zip file" in said(wrong)
    untrained = invoke(ws, "export", "resunet2d__dice", "--output", str(tmp_path / "b.zip"))
    assert untrained.exit_code == 1 and "is not a trained model of" in said(untrained)
    assert f"trained here: {BASELINE}" in said(untrained) and not (tmp_path / "b.zip").exists()
    bare = invoke(ws, "export")
    assert bare.exit_code == 1 and "--list" in said(bare)

"""evaluate and leaderboard on synthetic predictions whose scores are known by construction."""

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.evaluation.evaluate import evaluate
from ibsr_nnunet.evaluation.leaderboard import build
from ibsr_nnunet.core.workspace import Workspace

from helpers import invoke

HELDOUT = ["IBSR_06", "IBSR_07"]


@pytest.fixture
def ws(converted_copy) -> Workspace:
    """A copy of the session's converted seed-0 phantom workspace (the tests write predictions into it)."""
    return converted_copy


def write_model(ws: Workspace, model: str, relabel: dict[int, int] | None = None, cases=HELDOUT + ["IBSR_08"]) -> Path:
    """Predictions = the references with labels remapped (test case IBSR_08: all background)."""
    folder = ws.predictions / model
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        reference = ws.raw_dataset / "labelsTs" / f"{case}.nii.gz"
        source = reference if reference.exists() else ws.raw_dataset / "imagesTs" / f"{case}_0000.nii.gz"
        image = nib.load(source)
        labels = np.asarray(image.dataobj).astype(np.uint8) if reference.exists() else np.zeros(image.shape, np.uint8)
        for old, new in (relabel or {}).items():
            labels[np.asarray(image.dataobj) == old] = new
        nib.save(nib.Nifti1Image(labels, image.affine, image.header), folder / f"{case}.nii.gz")
    return folder


def counts(ws: Workspace, case: str) -> dict[int, int]:
    labels = np.asarray(nib.load(ws.raw_dataset / "labelsTs" / f"{case}.nii.gz").dataobj)
    return {k: int((labels == k).sum()) for k in (1, 2, 3)}


def test_perfect_and_csf_as_gm_scores(ws):
    perfect = evaluate(ws, write_model(ws, "perfect"), "perfect")
    assert len(perfect.table) == 6 and sorted(perfect.table["case"].unique()) == HELDOUT
    assert (perfect.table["dice"] == 1).all() and (perfect.table["hd"] == 0).all()
    assert (perfect.table["hd95"] == 0).all() and (perfect.table["avd"] == 0).all()

    merged = evaluate(ws, write_model(ws, "csf_as_gm", {1: 2}), "csf_as_gm").table.set_index(["case", "class"])
    for case in HELDOUT:
        c = counts(ws, case)
        assert merged.loc[(case, "CSF"), "dice"] == 0 and math.isinf(merged.loc[(case, "CSF"), "hd"])
        assert merged.loc[(case, "CSF"), "avd"] == 1
        assert merged.loc[(case, "GM"), "dice"] == pytest.approx(2 * c[2] / (2 * c[2] + c[1]), abs=1e-12)
        assert merged.loc[(case, "GM"), "avd"] == pytest.approx(c[1] / c[2], abs=1e-12)
        assert merged.loc[(case, "GM"), "pred_voxels"] == c[1] + c[2]
        assert merged.loc[(case, "WM"), "dice"] == 1
    written = pd.read_csv(ws.evaluation / "csf_as_gm.csv")
    assert list(written.columns[:4]) == ["model", "case", "class", "label"] and len(written) == 6


@pytest.mark.parametrize("breakage, message", [
    ("missing", "no prediction for held-out case IBSR_07"),
    ("grid", "differs from the reference IBSR_06.nii.gz"),
    ("unknown", "case IBSR_99 is not a case of Dataset501_IBSR18"),
    ("labels", "holds labels [0, 1, 2, 3, 7]"),
])
def test_mismatched_predictions_are_refused(ws, breakage, message):
    folder = write_model(ws, "broken")
    if breakage == "missing":
        (folder / "IBSR_07.nii.gz").unlink()
    elif breakage == "grid":
        image = nib.load(folder / "IBSR_06.nii.gz")
        affine = image.affine.copy()
        affine[0, 3] += 2.0
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), folder / "IBSR_06.nii.gz")
    elif breakage == "unknown":
        shutil.copy(folder / "IBSR_06.nii.gz", folder / "IBSR_99.nii.gz")
    else:
        image = nib.load(folder / "IBSR_06.nii.gz")
        labels = np.asarray(image.dataobj).copy()
        labels[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(labels, image.affine, image.header), folder / "IBSR_06.nii.gz")
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate(ws, folder, "broken")
    assert not (ws.evaluation / "broken.csv").exists()


def test_leaderboard_ranks_writes_and_reevaluates_changed_predictions(ws):
    write_model(ws, "perfect")
    write_model(ws, "csf_as_gm", {1: 2})
    write_model(ws, "wm_as_gm", {3: 2})
    result = build(ws)
    assert sorted(result.evaluated_now) == ["csf_as_gm", "perfect", "wm_as_gm"]
    board = pd.read_csv(ws.leaderboard)
    assert board["model"].tolist()[0] == "perfect" and board["rank"].tolist() == [1, 2, 3]
    row = board.set_index("model")
    assert row.loc["perfect", "mean_dice"] == 1 and row.loc["perfect", "GM_hd95_mean"] == 0
    c = [counts(ws, case) for case in HELDOUT]
    gm = [2 * x[2] / (2 * x[2] + x[1]) for x in c]
    assert row.loc["csf_as_gm", "mean_dice"] == pytest.approx((0 + np.mean(gm) + 1) / 3, abs=1e-12)
    assert row.loc["csf_as_gm", "GM_dice_std"] == pytest.approx(np.std(gm), abs=1e-12)
    assert row.loc["csf_as_gm", "cases"] == "IBSR_06;IBSR_07" and row.loc["csf_as_gm", "n_cases"] == 2
    assert row.loc["perfect", "split"] == "source Validation_Set held out: IBSR_06, IBSR_07"
    assert math.isnan(row.loc["perfect", "train_seconds"])  # no training logs for synthetic models

    assert build(ws).evaluated_now == []  # nothing changed: nothing re-scored
    write_model(ws, "perfect", {2: 3})  # the predictions changed after their evaluation
    again = build(ws)
    assert again.evaluated_now == ["perfect"]
    assert again.board.set_index("model").loc["perfect", "GM_dice_mean"] == 0


def test_baseline_training_time_comes_from_its_run_record(ws):
    write_model(ws, "unet2d__dice_ce")
    (ws.baselines / "unet2d__dice_ce").mkdir(parents=True)
    (ws.baselines / "unet2d__dice_ce" / "run.json").write_text(json.dumps({"train_seconds": 123.5}))
    assert build(ws).board.set_index("model").loc["unet2d__dice_ce", "train_seconds"] == 123.5


def test_leaderboard_refuses_an_empty_workspace(ws):
    with pytest.raises(InputError, match="nothing to rank"):
        build(ws)


def test_cli_evaluate_and_leaderboard_with_figures(ws):
    write_model(ws, "perfect")
    write_model(ws, "csf_as_gm", {1: 2})
    result = invoke(ws, "evaluate", "--predictions", str(ws.predictions / "perfect"), "--name", "perfect", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "perfect: 2 held-out cases" in result.output and (ws.evaluation / "perfect.csv").is_file()

    result = invoke(ws, "leaderboard", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "evaluated now: csf_as_gm" in result.output
    for png in ("dice_boxplot.png", "overlay_IBSR_06.png"):
        data = (ws.figures / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not (ws.figures / "training_curves.png").exists()  # synthetic models have no training logs

    refused = invoke(ws, "evaluate", "--predictions", str(ws.root / "nowhere"), "--name", "x")
    assert refused.exit_code == 1 and "is not a folder of predictions" in refused.output

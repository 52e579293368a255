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
from ibsr_nnunet.evaluation.evaluate import METRICS_VERSION, evaluate
from ibsr_nnunet.evaluation.leaderboard import build
from ibsr_nnunet.evaluation.metrics import nsd
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


def labels(ws: Workspace, case: str) -> np.ndarray:
    return np.asarray(nib.load(ws.raw_dataset / "labelsTs" / f"{case}.nii.gz").dataobj)


def test_nsd_per_case_and_in_the_leaderboard(ws):
    write_model(ws, "perfect")
    write_model(ws, "csf_as_gm", {1: 2})
    board = build(ws).board.set_index("model")
    assert (board.loc["perfect", [f"{t}_nsd_mean" for t in ("CSF", "GM", "WM")]] == 1).all()
    assert board.loc["csf_as_gm", "CSF_nsd_mean"] == 0 and board.loc["csf_as_gm", "CSF_nsd_std"] == 0  # none predicted
    assert board.loc["csf_as_gm", "WM_nsd_mean"] == 1 and (board["nsd_tolerance_mm"] == 1.0).all()
    # GM grown by the CSF: per case, the NSD of the two masks (values pinned against MONAI in test_metrics.py)
    spacing = nib.load(ws.raw_dataset / "labelsTs" / "IBSR_06.nii.gz").header.get_zooms()[:3]
    gm = [nsd(labels(ws, c) == 2, np.isin(labels(ws, c), (1, 2)), spacing) for c in HELDOUT]
    assert 0 < min(gm) and max(gm) < 1
    assert board.loc["csf_as_gm", "GM_nsd_mean"] == pytest.approx(np.mean(gm), abs=1e-12)
    assert board.loc["csf_as_gm", "GM_nsd_std"] == pytest.approx(np.std(gm), abs=1e-12)
    per_case = pd.read_csv(ws.evaluation / "csf_as_gm.csv").set_index(["case", "class"])
    assert per_case.loc[("IBSR_07", "GM"), "nsd"] == pytest.approx(gm[1], abs=1e-12)
    summary = json.loads((ws.evaluation / "csf_as_gm.json").read_text())
    assert summary["metrics"] == ["dice", "hd", "hd95", "avd", "nsd"] and summary["metrics_version"] == METRICS_VERSION
    assert summary["nsd_tolerance_mm"] == 1.0 and summary["mean"]["GM"]["nsd"] == pytest.approx(np.mean(gm), abs=1e-12)

    wider = build(ws, nsd_tolerance=50.0)  # another tolerance: every evaluation is redone at it
    assert sorted(wider.redone) == ["csf_as_gm", "perfect"]
    assert wider.redone["perfect"] == "NSD scored at 1 mm, not 50 mm"
    assert wider.board.set_index("model").loc["csf_as_gm", "GM_nsd_mean"] == 1  # every GM surface within 50 mm
    assert (wider.board["nsd_tolerance_mm"] == 50.0).all()


def as_previous_version(ws: Workspace, model: str) -> None:
    """Rewrite a model's evaluation as the previous metric set wrote it: no nsd column, no metrics or version."""
    csv, summary = ws.evaluation / f"{model}.csv", ws.evaluation / f"{model}.json"
    pd.read_csv(csv).drop(columns="nsd").to_csv(csv, index=False)
    recorded = json.loads(summary.read_text())
    for key in ("metrics", "metrics_version", "nsd_tolerance_mm"):
        del recorded[key]
    for tissue in ("CSF", "GM", "WM"):
        del recorded["mean"][tissue]["nsd"], recorded["std"][tissue]["nsd"]
    summary.write_text(json.dumps(recorded))


def test_evaluations_of_an_older_metric_set_are_redone_and_said(ws, tmp_path):
    write_model(ws, "perfect")
    write_model(ws, "csf_as_gm", {1: 2})
    outside = shutil.copytree(write_model(ws, "outside"), tmp_path / "elsewhere")  # evaluated from outside predictions/
    shutil.rmtree(ws.predictions / "outside")
    gone = shutil.copytree(outside, tmp_path / "gone")
    evaluate(ws, outside, "outside")
    evaluate(ws, gone, "gone")
    assert sorted(build(ws).board["model"]) == ["csf_as_gm", "gone", "outside", "perfect"]
    shutil.rmtree(gone)
    for model in ("perfect", "outside", "gone"):
        as_previous_version(ws, model)

    result = invoke(ws, "leaderboard", "--jobs", "1", "--no-figures")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    old = "scored with metric set v1 (dice, hd, hd95, avd), not v2 (adds nsd)"
    assert f"re-evaluated 2 models from their predictions: outside, perfect ({old})" in said
    assert f"not ranked: gone: {old}, and its predictions {gone} are gone" in said
    board = pd.read_csv(ws.leaderboard).set_index("model")
    assert sorted(board.index) == ["csf_as_gm", "outside", "perfect"]
    assert board.loc["perfect", "CSF_nsd_mean"] == 1 and board.loc["outside", "WM_nsd_mean"] == 1
    for model in ("perfect", "outside"):
        assert json.loads((ws.evaluation / f"{model}.json").read_text())["metrics_version"] == METRICS_VERSION
        assert "nsd" in pd.read_csv(ws.evaluation / f"{model}.csv").columns
    assert "re-evaluated" not in invoke(ws, "leaderboard", "--jobs", "1", "--no-figures").output  # now current


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
    result = invoke(ws, "evaluate", "--predictions", str(ws.predictions / "perfect"), "--name", "perfect", "--jobs", "1",
                    "--nsd-tolerance", "2")
    assert result.exit_code == 0, result.output
    assert "perfect: 2 held-out cases" in result.output and (ws.evaluation / "perfect.csv").is_file()
    assert "NSD (2 mm)" in result.output
    assert json.loads((ws.evaluation / "perfect.json").read_text())["nsd_tolerance_mm"] == 2.0

    result = invoke(ws, "leaderboard", "--jobs", "1")  # at the default 1 mm: perfect is scored again
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "evaluated now: csf_as_gm, perfect" in said
    assert "re-evaluated 1 model from their predictions: perfect (NSD scored at 2 mm, not 1 mm)" in said
    for png in ("dice_boxplot.png", "overlay_IBSR_06.png"):
        data = (ws.figures / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not (ws.figures / "training_curves.png").exists()  # synthetic models have no training logs

    refused = invoke(ws, "evaluate", "--predictions", str(ws.root / "nowhere"), "--name", "x")
    assert refused.exit_code == 1 and "is not a folder of predictions" in refused.output
    refused = invoke(ws, "leaderboard", "--nsd-tolerance", "-1")
    assert refused.exit_code == 2 and "--nsd-tolerance" in refused.output

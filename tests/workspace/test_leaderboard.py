"""evaluate and leaderboard on synthetic predictions whose scores are known by construction."""

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import invoke, said
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.evaluation import figures, statistics
from ibsr_nnunet.evaluation.evaluate import COLUMNS, METRICS_VERSION, evaluate
from ibsr_nnunet.evaluation.leaderboard import build, case_scores, rank
from ibsr_nnunet.evaluation.metrics import nsd
from ibsr_nnunet.nnunet.prediction_record import read_prediction_record
from ibsr_nnunet.nnunet.validation import crossval_dice

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


def voxel_ml(ws: Workspace, case: str) -> float:
    zooms = nib.load(ws.raw_dataset / "labelsTs" / f"{case}.nii.gz").header.get_zooms()[:3]
    return float(np.prod([float(z) for z in zooms])) / 1000  # in float64, as evaluate computes it


def synthetic_per_case(dice: dict[str, list[float]], volumes: dict[str, list[tuple[float, float]]] | None = None):
    """A per-case evaluation table: every tissue of a case gets the model's Dice for that case; (ref, pred) mL."""
    rows = []
    for model, values in dice.items():
        for i, d in enumerate(values):
            for label, name in ((1, "CSF"), (2, "GM"), (3, "WM")):
                ref_ml, pred_ml = (volumes or {}).get(model, [(100.0, 100.0)] * len(values))[i]
                rows.append({"model": model, "case": f"IBSR_{i + 1:02d}", "class": name, "label": label, "dice": d,
                             "hd": 1.0, "hd95": 1.0, "avd": 0.0, "ref_voxels": 1, "pred_voxels": 1,
                             "ref_ml": ref_ml, "pred_ml": pred_ml})
    return pd.DataFrame(rows, columns=COLUMNS)


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
    pd.read_csv(csv).drop(columns=["nsd", "ref_ml", "pred_ml"]).to_csv(csv, index=False)
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
    old = "scored with metric set v1 (dice, hd, hd95, avd), not v3 (adds nsd, volumes in mL)"
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
    result = invoke(ws, "evaluate", "--predictions", str(ws.predictions / "perfect"), "--name", "perfect",
                    "--jobs", "1", "--nsd-tolerance", "2")
    assert result.exit_code == 0, result.output
    assert "perfect: 2 held-out cases" in result.output and (ws.evaluation / "perfect.csv").is_file()
    assert "NSD (2 mm)" in result.output
    assert json.loads((ws.evaluation / "perfect.json").read_text())["nsd_tolerance_mm"] == 2.0

    result = invoke(ws, "leaderboard", "--jobs", "1")  # at the default 1 mm: perfect is scored again
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "evaluated now: csf_as_gm, perfect" in text
    assert "re-evaluated 1 model from their predictions: perfect (NSD scored at 2 mm, not 1 mm)" in text
    assert ("2 held-out case(s), below 5: no interval, rank1_share, p_vs_best, volume r or significance map"
            in said(result))
    assert said(result).count("≈") == 1  # csf_as_gm cannot be told apart from rank 1: 2 cases allow no test
    for png in ("dice_boxplot.png", "overlay_IBSR_06.png", "mean_dice_ci.png", "volume_agreement.png"):
        data = (ws.figures / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not (ws.figures / "training_curves.png").exists()  # synthetic models have no training logs
    assert not (ws.figures / "significance.png").exists()  # 2 cases: no significance map

    refused = invoke(ws, "evaluate", "--predictions", str(ws.root / "nowhere"), "--name", "x")
    assert refused.exit_code == 1 and "is not a folder of predictions" in refused.output
    refused = invoke(ws, "leaderboard", "--nsd-tolerance", "-1")
    assert refused.exit_code == 2 and "--nsd-tolerance" in refused.output


# ---- uncertainty, volume agreement, validation beside held-out ----------------------------------------------------

def test_rank_reports_intervals_shares_and_p_from_five_cases():
    dice = {"b": [0.80] * 5, "a": [0.90, 0.91, 0.92, 0.93, 0.94], "c": [0.5, 0.95, 0.6, 0.7, 0.4]}
    ranked = rank(synthetic_per_case(dice), "split", {})
    board = ranked.set_index("model")
    assert board.index.tolist() == ["a", "b", "c"]
    scores = np.array([dice["a"], dice["b"], dice["c"]])
    expected = statistics.bootstrap(scores)  # the same seed and the same draws for all three
    assert board["mean_dice_ci_low"].tolist() == pytest.approx(expected.low.tolist())
    assert board["mean_dice_ci_high"].tolist() == pytest.approx(expected.high.tolist())
    assert board.loc["a", "rank1_share"] == 1.0 and board["rank1_share"].sum() == pytest.approx(1.0)
    # a beats b on every case: raw 1/32; vs c: d = (.4, -.04, .32, .23, .54), W+ = 14 of 15 -> 2/32; Holm over 2
    assert math.isnan(board.loc["a", "p_vs_best"])
    assert board.loc["b", "p_vs_best"] == pytest.approx(2 / 32) and board.loc["c", "p_vs_best"] == pytest.approx(2 / 32)
    assert board.loc["a", "mean_dice_ci_low"] <= board.loc["a", "mean_dice"] <= board.loc["a", "mean_dice_ci_high"]
    columns = ranked.columns.tolist()
    assert columns[:9] == ["rank", "model", "mean_dice", "mean_dice_ci_low", "mean_dice_ci_high", "rank1_share",
                           "p_vs_best", "n_cases", "train_seconds"]
    for tissue in ("CSF", "GM", "WM"):
        assert {f"{tissue}_vol_bias_ml", f"{tissue}_vol_loa_low_ml", f"{tissue}_vol_loa_high_ml", f"{tissue}_vol_r",
                f"{tissue}_cv_dice_mean"} <= set(columns)
    assert {"cv_dice_mean", "cv_n", "internal_val_dice"} <= set(columns)


def test_rank_leaves_uncertainty_empty_below_five_cases():
    board = rank(synthetic_per_case({"a": [0.9] * 4, "b": [0.8] * 4},
                                    {"a": [(10, 11), (20, 22), (30, 33), (40, 44)]} | {"b": [(10, 10)] * 4}), "s", {})
    for column in ("mean_dice_ci_low", "mean_dice_ci_high", "rank1_share", "p_vs_best", "CSF_vol_r", "WM_vol_r"):
        assert board[column].isna().all(), column
    # bias and limits of agreement stay: differences 1, 2, 3, 4 mL (mean 2.5, SD sqrt(5/3))
    row = board.set_index("model").loc["a"]
    assert row["GM_vol_bias_ml"] == pytest.approx(2.5)
    assert row["GM_vol_loa_high_ml"] == pytest.approx(2.5 + 1.96 * math.sqrt(5 / 3))


def test_volume_agreement_of_predictions_with_known_volume_errors(ws):
    write_model(ws, "perfect")
    write_model(ws, "csf_as_gm", {1: 2})  # every CSF voxel predicted GM: CSF -V_csf, GM +V_csf, WM 0 per case
    board = build(ws).board.set_index("model")
    csf = np.array([counts(ws, c)[1] * voxel_ml(ws, c) for c in HELDOUT])
    row = board.loc["csf_as_gm"]
    assert row["CSF_vol_bias_ml"] == pytest.approx(-csf.mean(), rel=1e-12)
    assert row["GM_vol_bias_ml"] == pytest.approx(csf.mean(), rel=1e-12)
    assert row["WM_vol_bias_ml"] == 0 and row["WM_vol_loa_low_ml"] == 0 and row["WM_vol_loa_high_ml"] == 0
    sd = np.std(csf, ddof=1)
    assert row["GM_vol_loa_low_ml"] == pytest.approx(csf.mean() - 1.96 * sd, rel=1e-12)
    assert row["CSF_vol_loa_high_ml"] == pytest.approx(-csf.mean() + 1.96 * sd, rel=1e-12)
    assert board.loc["perfect", ["CSF_vol_bias_ml", "GM_vol_bias_ml", "WM_vol_bias_ml"]].tolist() == [0, 0, 0]
    assert board["CSF_vol_r"].isna().all()  # 2 held-out cases: no correlation reported
    written = pd.read_csv(ws.evaluation / "csf_as_gm.csv").set_index(["case", "class"])
    for case in HELDOUT:
        assert written.loc[(case, "CSF"), "ref_ml"] == pytest.approx(counts(ws, case)[1] * voxel_ml(ws, case))
        assert written.loc[(case, "CSF"), "pred_ml"] == 0


def summary_json(dice_per_case: list[tuple[float, float, float]]) -> dict:
    """nnU-Net's summary.json (evaluate_predictions.compute_metrics_on_folder, labels as string keys)."""
    cases = [{"metrics": {str(label): {"Dice": d, "IoU": d / (2 - d), "FN": 0, "FP": 0, "TN": 0, "TP": 0,
                                       "n_pred": 0, "n_ref": 0} for label, d in zip((1, 2, 3), dice)},
              "prediction_file": f"/x/validation/IBSR_{i:02d}.nii.gz", "reference_file": f"/gt/IBSR_{i:02d}.nii.gz"}
             for i, dice in enumerate(dice_per_case)]
    defined = {label: [c[label - 1] for c in dice_per_case if not math.isnan(c[label - 1])] for label in (1, 2, 3)}
    means = {str(label): {"Dice": float(np.mean(v)) if v else math.nan} for label, v in defined.items()}
    return {"foreground_mean": {"Dice": float(np.mean([m["Dice"] for m in means.values()]))}, "mean": means,
            "metric_per_case": cases}


FOLD_0 = [(0.5, 0.8, 0.9), (0.6, 0.8, 0.9), (0.7, 0.8, 0.9)]  # 3 validation cases
FOLD_1 = [(0.2, 0.7, math.nan)]  # 1 case; WM undefined (absent from both): nnU-Net's NaN, skipped in the mean


def nnunet_model(ws: Workspace, model: str, configurations: list[str], postprocessing_file: Path) -> None:
    write_model(ws, model)
    trainer = "IbsrTrainer_2ep_3it"
    for fold, cases in enumerate((FOLD_0, FOLD_1)):
        folder = ws.results_dataset / f"{trainer}__nnUNetPlans__{configurations[0]}" / f"fold_{fold}" / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(summary_json(cases)))
    (ws.predictions / model / "model.json").write_text(json.dumps(
        {"model": model, "trainer": trainer, "configurations": configurations, "folds": [0, 1],
         "postprocessing_file": str(postprocessing_file)}))


def test_crossval_dice_pools_cases_of_unequal_folds(ws):
    nnunet_model(ws, "nnunet_2d", ["2d"], ws.root / "nowhere" / "postprocessing.pkl")
    found = crossval_dice(ws, read_prediction_record(ws.predictions / "nnunet_2d"))
    # pooled: CSF (0.5+0.6+0.7+0.2)/4 = 0.5 (averaging the folds would give (0.6+0.2)/2 = 0.4); WM 0.9 from 3 cases
    assert found.n == 4 and not found.postprocessed
    assert found.dice == pytest.approx({"CSF": 0.5, "GM": 0.775, "WM": 0.9})
    assert found.mean == pytest.approx((0.5 + 0.775 + 0.9) / 3)


def test_crossval_dice_after_chosen_postprocessing_and_baseline_internal_validation(ws):
    source = ws.results_dataset / "ensembles" / "ensemble___a___b___0_1"
    source.mkdir(parents=True)
    (source / "summary.json").write_text(json.dumps(summary_json(FOLD_0 + FOLD_1)))
    # nnU-Net's postprocessing.json: the pooled means before ("input_folder") and after ("postprocessed")
    (source / "postprocessing.json").write_text(json.dumps({
        "input_folder": {"foreground_mean": {"Dice": 0.725}, "mean": summary_json(FOLD_0 + FOLD_1)["mean"]},
        "postprocessed": {"foreground_mean": {"Dice": 0.8},
                          "mean": {"1": {"Dice": 0.6}, "2": {"Dice": 0.85}, "3": {"Dice": 0.95}}},
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
        "postprocessing_kwargs": [{"labels_or_regions": 3}]}))
    nnunet_model(ws, "nnunet_ensemble", ["2d", "3d_fullres"], source / "postprocessing.pkl")
    write_model(ws, "unet2d__dice_ce", {1: 2})
    (ws.baselines / "unet2d__dice_ce").mkdir(parents=True)
    (ws.baselines / "unet2d__dice_ce" / "run.json").write_text(json.dumps({"best_val_dice": 0.99, "train_seconds": 1}))
    board = build(ws).board.set_index("model")
    row = board.loc["nnunet_ensemble"]
    assert row["cv_n"] == 4 and row["cv_dice_mean"] == pytest.approx(0.8)
    assert [row[f"{t}_cv_dice_mean"] for t in ("CSF", "GM", "WM")] == pytest.approx([0.6, 0.85, 0.95])
    assert math.isnan(row["internal_val_dice"])
    found = crossval_dice(ws, read_prediction_record(ws.predictions / "nnunet_ensemble"))
    assert found.postprocessed and found.source == source / "postprocessing.json"
    baseline = board.loc["unet2d__dice_ce"]
    assert baseline["internal_val_dice"] == 0.99 and math.isnan(baseline["cv_dice_mean"])
    assert math.isnan(baseline["cv_n"])
    # the ranking is the held-out one: the baseline's higher validation Dice does not lift it
    assert board.loc["nnunet_ensemble", "rank"] == 1 and board.loc["unet2d__dice_ce", "rank"] == 2


def test_figures_with_five_cases(tmp_path):
    dice = {"a": [0.90, 0.91, 0.92, 0.93, 0.94], "b": [0.80] * 5, "c": [0.5, 0.95, 0.6, 0.7, 0.4]}
    per_case = synthetic_per_case(dice, {m: [(100 + i, 100 + i + k) for i in range(5)] for k, m in enumerate(dice)})
    board = rank(per_case, "s", {})
    assert case_scores(per_case, ["c", "a"])[0][0].tolist() == pytest.approx(dice["c"])
    for drawn in (figures.mean_dice_intervals(board, per_case, tmp_path / "ci.png"),
                  figures.significance_map(board, per_case, tmp_path / "sig.png"),
                  figures.volume_agreement(board, per_case, tmp_path / "vol.png")):
        data = drawn.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    fewer = per_case[per_case["case"] != "IBSR_05"]
    assert figures.significance_map(rank(fewer, "s", {}), fewer, tmp_path / "none.png") is None


def test_readme_explains_every_leaderboard_column():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Reading the leaderboard", 1)[1].split("\n### ", 1)[0]
    board = rank(synthetic_per_case({"a": [0.9] * 5, "b": [0.8] * 5}), "s", {})
    for column in board.columns:
        generic = column
        for tissue in ("CSF", "GM", "WM"):
            generic = generic.replace(f"{tissue}_", "<T>_", 1) if generic.startswith(f"{tissue}_") else generic
        wildcard = generic.rsplit("_", 1)[0] + "_*"
        assert f"`{generic}`" in section or f"`{wildcard}`" in section, column


def test_evaluations_with_other_columns_are_redone_or_named(ws):
    write_model(ws, "perfect")
    write_model(ws, "orphan")
    build(ws)
    for model in ("perfect", "orphan"):  # as version 2 wrote them: no volumes in mL
        old = pd.read_csv(ws.evaluation / f"{model}.csv").drop(columns=["ref_ml", "pred_ml"])
        old.to_csv(ws.evaluation / f"{model}.csv", index=False)
        summary = json.loads((ws.evaluation / f"{model}.json").read_text())
        (ws.evaluation / f"{model}.json").write_text(json.dumps({**summary, "metrics_version": 2}))
    shutil.rmtree(ws.predictions / "orphan")  # its predictions are gone: it cannot be redone here
    again = build(ws)
    assert again.evaluated_now == ["perfect"] and again.board["model"].tolist() == ["perfect"]
    assert again.redone == {"perfect": "scored with metric set v2 (dice, hd, hd95, avd, nsd), not v3 (adds volumes "
                                       "in mL)"}
    assert again.left_out == [f"orphan: {again.redone['perfect']}, and its predictions {ws.predictions / 'orphan'} "
                              f"are gone; evaluate it again with `ibsr-nnunet evaluate` to rank it"]


def test_a_hand_edited_reference_is_found_and_every_evaluation_against_it_redone(ws, tmp_path):
    write_model(ws, "perfect")
    outside = shutil.copytree(write_model(ws, "outside"), tmp_path / "elsewhere")
    shutil.rmtree(ws.predictions / "outside")
    gone = shutil.copytree(outside, tmp_path / "gone")
    evaluate(ws, outside, "outside")
    evaluate(ws, gone, "gone")
    assert build(ws).board.set_index("model").loc["perfect", "WM_dice_mean"] == 1
    shutil.rmtree(gone)
    reference = ws.raw_dataset / "labelsTs" / "IBSR_06.nii.gz"
    image = nib.load(reference)
    labels = np.asarray(image.dataobj).copy()
    labels[labels == 3] = 2  # WM -> GM, by hand
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), reference)

    result = invoke(ws, "leaderboard", "--jobs", "1", "--no-figures")
    assert result.exit_code == 0, result.output
    changed = "the reference labels of IBSR_06 changed since it was scored"
    assert f"re-evaluated 2 models from their predictions: outside, perfect ({changed})" in said(result)
    assert f"not ranked: gone: {changed}, and its predictions {gone} are gone" in said(result)
    assert ("was changed since convert wrote it: labelsTs/IBSR_06.nii.gz changed since convert wrote it; the scores "
            "are against it as it is now") in said(result)  # the dataset's path is left out: rich wraps it
    board = pd.read_csv(ws.leaderboard).set_index("model")
    scored_now = evaluate(ws, ws.predictions / "perfect", "again").per_class
    assert board.loc["perfect", "WM_dice_mean"] == pytest.approx(scored_now.loc["WM", ("dice", "mean")])
    assert board.loc["perfect", "WM_dice_mean"] < 0.75 and sorted(board.index) == ["outside", "perfect"]
    assert "re-evaluated" not in invoke(ws, "leaderboard", "--jobs", "1", "--no-figures").output  # now current

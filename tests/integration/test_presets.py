"""nnU-Net's plans presets on real nnunetv2 and phantoms: every preset planned (the ResEnc presets by experiment
planning only, on the default plans' preprocessed data), a 2-epoch resenc-m 2d fold, and an ensemble across two
presets that `leaderboard` ranks and `segment` reproduces."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import cli, copy_workspace, runs_lines
from ibsr_nnunet.core.manifest import read_manifest
from ibsr_nnunet.core.provenance import PROVENANCE_FILE
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name
from ibsr_nnunet.nnunet.plans import read_plan_stamp, read_plans
from ibsr_nnunet.nnunet.presets import PRESET_TABLE

EPOCHS, ITERATIONS = 2, 3
TRAINER = trainer_name(EPOCHS, ITERATIONS)
RESENC = ("resenc-m", "resenc-l", "resenc-xl")


def text(done) -> str:
    return " ".join(done.stdout.split())


def data_files(ws) -> dict[str, int]:
    """Every file of the default plans' preprocessed data, by its path, with its modification time."""
    return {str(p.relative_to(ws.preprocessed_dataset)): p.stat().st_mtime_ns
            for name in ("nnUNetPlans_2d", "nnUNetPlans_3d_fullres")
            for p in sorted((ws.preprocessed_dataset / name).iterdir())}


@pytest.fixture(scope="module")
def presets_ws(planned_ws, tmp_path_factory):
    ws = copy_workspace(planned_ws, tmp_path_factory.mktemp("presets") / "ws")
    before = data_files(ws)
    done = cli(ws, "plan", "--presets", "default,resenc-m,resenc-l,resenc-xl", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    return ws, done, before


def test_every_preset_is_planned_with_nnunets_planner_and_shares_the_preprocessed_data(presets_ws):
    ws, done, before = presets_ws
    said = text(done)
    assert "preset default (nnUNetPlans, PlainConvUNet)" in said
    assert "preset default: up to date, nothing redone" in said
    fingerprint = read_manifest(ws).fingerprint
    for name in RESENC:
        preset = PRESET_TABLE[name]
        assert f"preset {name} ({preset.plans}, ResidualEncoderUNet)" in said
        assert (f"preset {name}: planned 2d, 3d_fullres only (experiment "
                f"planning): its preprocessed data (nnUNetPlans_2d, nnUNetPlans_3d_fullres) was already made from "
                f"this dataset in"
                in said), said
        stamp = read_plan_stamp(ws, preset)
        assert (stamp.raw_fingerprint, stamp.preprocessed, stamp.reused) == (fingerprint, (), ("2d", "3d_fullres"))
        plans = read_plans(ws, preset)
        assert plans["plans_name"] == preset.plans
        for configuration in ("2d", "3d_fullres"):
            planned = plans["configurations"][configuration]
            assert planned["data_identifier"] == f"nnUNetPlans_{configuration}"
            assert planned["architecture"]["network_class_name"].endswith(".ResidualEncoderUNet")
    assert data_files(ws) == before  # not one preprocessed file was rewritten
    # residual blocks per encoder stage (nnU-Net's ResEnc: 1, 3, 4, 6, ...), where the default plans have none
    for name in RESENC:
        blocks = read_plans(ws, PRESET_TABLE[name])["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        assert blocks["n_blocks_per_stage"][:3] == [1, 3, 4]
    assert "n_blocks_per_stage" not in read_plans(ws)["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    again = cli(ws, "plan", "--presets", "resenc-m", "--jobs", "2")
    assert again.returncode == 0
    assert "preset resenc-m: up to date, nothing redone" in text(again)


def test_a_preset_alone_on_an_unplanned_workspace_is_preprocessed(converted_ws, tmp_path):
    ws = copy_workspace(converted_ws, tmp_path / "ws")
    done = cli(ws, "plan", "--presets", "resenc-m", "--configs", "2d", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "preset resenc-m: planned and preprocessed 2d in" in text(done)
    stamp = read_plan_stamp(ws, PRESET_TABLE["resenc-m"])
    assert (stamp.preprocessed, stamp.reused) == (("2d",), ()) and read_plan_stamp(ws) is None
    assert any((ws.preprocessed_dataset / "nnUNetPlans_2d").iterdir())
    refused = cli(ws, "train", "--fold", "0", "--config", "2d", "--epochs", "1", "--device", "cpu")
    assert refused.returncode == 1 and "no nnU-Net plans of preset default" in refused.stderr


@pytest.fixture(scope="module")
def ensembled(presets_ws):
    ws, _, _ = presets_ws
    for preset in ("resenc-m", "default"):
        done = cli(ws, "train", "--fold", "0", "--config", "2d", "--preset", preset, "--epochs", str(EPOCHS),
                   "--iterations-per-epoch", str(ITERATIONS), "--device", "cpu", timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
    done = cli(ws, "ensemble", "--device", "cpu", "--jobs", "2", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return ws, done


def test_a_resenc_m_fold_trains_its_own_network_and_records_its_preset(ensembled):
    ws, _ = ensembled
    folder = fold_folder(ws, "2d", 0, trainer=TRAINER, plans="nnUNetResEncUNetMPlans")
    assert folder.parent.name == f"{TRAINER}__nnUNetResEncUNetMPlans__2d"
    state = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert state["init_args"]["plans"]["plans_name"] == "nnUNetResEncUNetMPlans" and state["current_epoch"] == EPOCHS
    assert any(key.startswith("encoder.stages.") and ".blocks." in key for key in state["network_weights"])
    [start] = [line for line in runs_lines(folder) if line["event"] == "start"]
    assert start["preset"] == "resenc-m" and start["plans"] == "nnUNetResEncUNetMPlans"
    assert json.loads((folder / PROVENANCE_FILE).read_text())["plans"] == "nnUNetResEncUNetMPlans"
    [default] = [line for line in runs_lines(fold_folder(ws, "2d", 0, trainer=TRAINER)) if line["event"] == "start"]
    assert "preset" not in default


def test_the_ensemble_searches_both_presets_and_predicts_their_cross_preset_ensemble(ensembled):
    ws, done = ensembled
    best = json.loads((ws.root / "best_configuration.json").read_text())
    assert best["models"] == ["nnunet_2d", "nnunet_resencm_2d"] and best["folds"] == [0]
    models = {"nnunet_2d", "nnunet_resencm_2d", "nnunet_cross_preset_ensemble"}
    assert set(best["crossval_dice"]) == models and set(best["predictions"]) == models
    assert best["winner"] in models
    record = json.loads((ws.predictions / "nnunet_cross_preset_ensemble" / "model.json").read_text())
    assert (record["configurations"], record["plans"]) == (["2d", "2d"], ["nnUNetPlans", "nnUNetResEncUNetMPlans"])
    assert "ensembles" in record["postprocessing_file"]
    cases = sorted(p.name.removesuffix("_0000.nii.gz") for p in (ws.raw_dataset / "imagesTs").glob("*_0000.nii.gz"))
    for model in models:
        assert sorted(p.name.removesuffix(".nii.gz") for p in (ws.predictions / model).glob("*.nii.gz")) == cases
        labels = np.asarray(nib.load(ws.predictions / model / f"{cases[0]}.nii.gz").dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert "best-configuration search over 2d, resenc-m 2d" in text(done)
    board = cli(ws, "leaderboard")
    assert board.returncode == 0, board.stdout + board.stderr
    import pandas as pd

    table = pd.read_csv(ws.leaderboard)
    assert models <= set(table["model"])


def test_segment_with_a_resenc_model_reproduces_its_prediction_set(ensembled, tmp_path):
    ws, _ = ensembled
    image = sorted((ws.raw_dataset / "imagesTs").glob("*_0000.nii.gz"))[0]
    case = image.name.removesuffix("_0000.nii.gz")
    done = cli(ws, "segment", str(image), "--output", str(tmp_path / "out"), "--model", "nnunet_cross_preset_ensemble",
               "--device", "cpu", "--tta", timeout=900)  # as `ensemble` predicted
    assert done.returncode == 0, done.stdout + done.stderr
    [written] = [p for p in (tmp_path / "out").glob("*.nii.gz")]
    ours = np.asarray(nib.load(written).dataobj)
    theirs = np.asarray(nib.load(ws.predictions / "nnunet_cross_preset_ensemble" / f"{case}.nii.gz").dataobj)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_an_nnunet_bundle_segments_as_in_the_workspace_and_installs_with_nnunets_own_tool(ensembled, tmp_path):
    import subprocess
    import zipfile

    from helpers import console_script
    from ibsr_nnunet.nnunet.environment import EXT_TRAINER_FOLDER
    from ibsr_nnunet.segment.bundle import CACHE_ENV

    ws, _ = ensembled
    env = {CACHE_ENV: str(tmp_path / "cache")}
    sizes = {}
    for model in ("nnunet_2d", "nnunet_resencm_2d", "nnunet_cross_preset_ensemble"):
        bundle = tmp_path / f"{model}.zip"
        done = cli(ws, "export", model, "--output", str(bundle))
        assert done.returncode == 0, done.stdout + done.stderr
        sizes[model] = bundle.stat().st_size
    with zipfile.ZipFile(tmp_path / "nnunet_cross_preset_ensemble.zip") as archive:
        names = set(archive.namelist())
    for plans in ("nnUNetPlans", "nnUNetResEncUNetMPlans"):
        model = f"{ws.dataset_name}/{TRAINER}__{plans}__2d"
        assert {f"{model}/fold_0/checkpoint_final.pth", f"{model}/plans.json", f"{model}/dataset.json"} <= names
    assert sizes["nnunet_cross_preset_ensemble"] > sizes["nnunet_resencm_2d"] > sizes["nnunet_2d"]

    image = sorted((ws.raw_dataset / "imagesTs").glob("*_0000.nii.gz"))[0]
    outputs = {}
    for where, workspace, model in (("inside", ws, "nnunet_cross_preset_ensemble"),
                                    ("bundle", tmp_path / "fresh", str(tmp_path / "nnunet_cross_preset_ensemble.zip"))):
        done = cli(workspace, "segment", str(image), "--output", str(tmp_path / where), "--model", model, "--device",
                   "cpu", env=env, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        [written] = (tmp_path / where).glob("*_tissue.nii.gz")
        outputs[where] = np.asarray(nib.load(written).dataobj)
    np.testing.assert_array_equal(outputs["bundle"], outputs["inside"])
    assert not (tmp_path / "fresh").exists()

    # nnU-Net's own installer takes the bundle into its nnUNet_results, and its predictor runs from there
    results = tmp_path / "nnUNet_results"
    nnunet_env = {**os.environ, "nnUNet_results": str(results), "nnUNet_raw": str(tmp_path / "raw"),
                  "nnUNet_preprocessed": str(tmp_path / "preprocessed"), "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER)}
    installed = subprocess.run([console_script("nnUNetv2_install_pretrained_model_from_zip"),
                                str(tmp_path / "nnunet_resencm_2d.zip")], env=nnunet_env, capture_output=True,
                               text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    folder = results / ws.dataset_name / f"{TRAINER}__nnUNetResEncUNetMPlans__2d"
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
    predicted = subprocess.run([console_script("nnUNetv2_predict"), "-i", str(image.parent), "-o",
                                str(tmp_path / "nnunet-out"), "-d", str(ws.dataset_id), "-c", "2d", "-p",
                                "nnUNetResEncUNetMPlans", "-tr", TRAINER, "-f", "0", "-device", "cpu",
                                "--disable_tta", "-npp", "1", "-nps", "1"], env=nnunet_env, capture_output=True,
                               text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    labels = np.asarray(nib.load(tmp_path / "nnunet-out" / image.name.replace("_0000", "")).dataobj)
    assert labels.shape == nib.load(image).shape and set(np.unique(labels)) <= {0, 1, 2, 3}
    print("bundle bytes:", sizes)

"""Nothing stale is reused: every result records the dataset it was made from, and each step that finds one made
from another dataset refuses it, leaves it out, or (with --archive-stale) moves it aside — never silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import cli, invoke, said
from ibsr_nnunet.core import checksums, provenance
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.manifest import read_manifest
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.phantom import write_phantoms
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name

OLD = "0" * 64  # the fingerprint of "another dataset"


def fake_fold(ws: Workspace, config: str, fold: int, trainer: str, fingerprint: str | None) -> Path:
    """A finished-looking fold folder (final checkpoint, validation summary, one .npz), recorded as `fingerprint`."""
    folder = fold_folder(ws, config, fold, trainer=trainer)
    (folder / "validation").mkdir(parents=True)
    (folder / "checkpoint_final.pth").write_bytes(b"x")
    (folder / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}}))
    (folder / "validation" / "IBSR_01.npz").write_bytes(b"x")
    if fingerprint:
        provenance.write_provenance(folder, fingerprint)
    return folder


def reference_predictions(ws: Workspace, model: str, fingerprint: str | None) -> Path:
    """A prediction set equal to the held-out references (+ the test case), recorded as `fingerprint`."""
    out = ws.predictions / model
    out.mkdir(parents=True)
    for case in ws.cases("heldout"):
        shutil.copy(case.label, out / f"{case.id}.nii.gz")
    if fingerprint:
        provenance.write_provenance(out, fingerprint, model=model)
    return out


# ---- the records themselves ---------------------------------------------------------------------------------------

@pytest.mark.workspace
def test_record_staleness_and_contradiction(tmp_path):
    folder = tmp_path / "run"
    assert provenance.staleness(folder, "a" * 64) is None  # nothing there: nothing stale
    folder.mkdir()
    assert provenance.staleness(folder, "a" * 64) is None  # empty: nothing stale
    (folder / "weights").write_bytes(b"x")
    assert provenance.staleness(folder, "a" * 64) == (
        "made from dataset an unknown dataset (no provenance recorded), the workspace now holds aaaaaaaaaaaa")
    assert provenance.contradicts(folder, "a" * 64) is None  # no record: judged by its contents elsewhere
    provenance.write_provenance(folder, "b" * 64, model="m")
    assert provenance.recorded(folder) == "b" * 64
    assert provenance.staleness(folder, "a" * 64) == (
        "made from dataset bbbbbbbbbbbb, the workspace now holds aaaaaaaaaaaa")
    assert provenance.contradicts(folder, "a" * 64) == provenance.staleness(folder, "a" * 64)
    assert provenance.staleness(folder, "b" * 64) is None


@pytest.mark.workspace
def test_weights_signature_and_what_changes_it(tmp_path):
    import hashlib
    import os

    ws = Workspace(tmp_path / "ws")
    best = ws.baselines / "unet2d__dice" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights")
    [entry] = signature = provenance.weights_signature(ws, [best])
    assert entry == {"path": "baselines/unet2d__dice/best.pt", "size": 7, "mtime_ns": best.stat().st_mtime_ns,
                     "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert provenance.weights_changed(ws, signature) is None
    os.utime(best, ns=(entry["mtime_ns"] + 10**9, entry["mtime_ns"] + 10**9))  # touched, the same bytes
    assert provenance.weights_changed(ws, signature) is None
    best.write_bytes(b"WEIGHTS")  # the same size, other bytes: a retrained run
    assert provenance.weights_changed(ws, signature).startswith("baselines/unet2d__dice/best.pt changed at ")
    best.unlink()
    assert provenance.weights_changed(ws, signature) == "baselines/unet2d__dice/best.pt is gone"
    provenance.write_provenance(best.parent, "a" * 64, weights=signature)
    assert provenance.recorded_weights(best.parent) == signature
    assert provenance.recorded_weights(tmp_path) is None  # no record: no weights to judge by


@pytest.mark.workspace
def test_archive_moves_and_deletes_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws")
    run = ws.baselines / "unet2d__dice"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"weights")
    provenance.write_provenance(run, OLD)
    said_lines = []
    with pytest.raises(InputError, match=r"unet2d__dice .*is stale: made from dataset 000000000000.*--archive-stale"):
        provenance.ensure_current(ws, run, what="baseline run", fingerprint="f" * 64, archive_stale=False)
    assert (run / "best.pt").is_file()
    provenance.ensure_current(ws, run, what="baseline run", fingerprint="f" * 64, archive_stale=True,
                              say=said_lines.append)
    [moved] = list((ws.root / "stale").glob("*/baselines/unet2d__dice"))
    assert (moved / "best.pt").read_bytes() == b"weights" and not run.exists()
    assert said_lines and str(moved.parents[1]) in said_lines[0]
    with pytest.raises(InputError, match="outside the workspace"):
        provenance.archive(ws, [tmp_path / "elsewhere"])


@pytest.mark.workspace
def test_archive_copies_shared_files_and_never_lands_on_another_archive(tmp_path):
    ws = Workspace(tmp_path / "ws")
    shared = ws.root / "model" / "plans.json"
    for n in (0, 1):
        (ws.root / "model" / f"fold_{n}").mkdir(parents=True)
        (ws.root / "model" / f"fold_{n}" / "weights").write_text(str(n))
    shared.write_text("plans")
    first = provenance.archive(ws, [ws.root / "model" / "fold_0"], copies=[shared])
    second = provenance.archive(ws, [ws.root / "model" / "fold_1"], copies=[shared])  # within the same second
    assert first != second and shared.read_text() == "plans"
    for target, n in ((first, 0), (second, 1)):
        assert (target / "model" / f"fold_{n}" / "weights").read_text() == str(n)
        assert (target / "model" / "plans.json").read_text() == "plans"


# ---- each step, on the shared converted phantom -------------------------------------------------------------------

@pytest.mark.workspace
def test_leaderboard_leaves_stale_prediction_sets_out_and_records_the_dataset(converted_copy):
    ws = converted_copy
    current = provenance.dataset_fingerprint(ws)
    reference_predictions(ws, "unet2d__dice", current)
    reference_predictions(ws, "resunet2d__dice", OLD)
    result = invoke(ws, "leaderboard", "--no-figures")
    assert result.exit_code == 0, result.output
    board = pd.read_csv(ws.leaderboard)
    assert board["model"].tolist() == ["unet2d__dice"]
    assert board["dataset_fingerprint"].tolist() == [current]
    assert "not ranked: resunet2d__dice: its predictions are stale (made from dataset 000000000000" in said(result)
    summary = json.loads((ws.evaluation / "unet2d__dice.json").read_text())
    assert summary["dataset_fingerprint"] == current


@pytest.mark.workspace
def test_an_evaluation_of_another_dataset_is_archived_and_redone(converted_copy):
    ws = converted_copy
    reference_predictions(ws, "unet2d__dice", provenance.dataset_fingerprint(ws))
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    summary = ws.evaluation / "unet2d__dice.json"
    recorded = json.loads(summary.read_text())
    summary.write_text(json.dumps({**recorded, "dataset_fingerprint": OLD}))
    old_csv = (ws.evaluation / "unet2d__dice.csv").read_bytes()
    result = invoke(ws, "leaderboard", "--no-figures")
    assert result.exit_code == 0 and "evaluated now: unet2d__dice" in said(result)
    assert "archived evaluation unet2d__dice (scored on dataset 000000000000" in said(result)
    assert json.loads(summary.read_text())["dataset_fingerprint"] == provenance.dataset_fingerprint(ws)
    [archived] = list((ws.root / "stale").glob("*/evaluation/unet2d__dice.json"))
    assert json.loads(archived.read_text())["dataset_fingerprint"] == OLD
    assert (archived.parent / "unet2d__dice.csv").read_bytes() == old_csv


@pytest.mark.workspace
def test_a_board_of_another_dataset_is_archived_with_its_figures(converted_copy):
    ws = converted_copy
    reference_predictions(ws, "unet2d__dice", provenance.dataset_fingerprint(ws))
    ws.figures.mkdir()
    (ws.figures / "dice_boxplot.png").write_bytes(b"old figure")
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    assert not list(ws.root.glob("stale/*"))  # a board of this dataset is replaced in place
    board = pd.read_csv(ws.leaderboard)
    board.assign(dataset_fingerprint=OLD).to_csv(ws.leaderboard, index=False)
    result = invoke(ws, "leaderboard", "--no-figures")
    assert result.exit_code == 0, result.output
    assert "archived leaderboard.csv and its figures (ranked on dataset 000000000000" in said(result)
    [archived] = list((ws.root / "stale").glob("*/leaderboard.csv"))
    assert pd.read_csv(archived, dtype=str)["dataset_fingerprint"].tolist() == [OLD]
    assert (archived.parent / "figures" / "dice_boxplot.png").read_bytes() == b"old figure"
    assert pd.read_csv(ws.leaderboard)["dataset_fingerprint"].tolist() == [provenance.dataset_fingerprint(ws)]


@pytest.mark.workspace
def test_evaluate_refuses_predictions_recorded_from_another_dataset(converted_copy):
    ws = converted_copy
    out = reference_predictions(ws, "unet2d__dice", OLD)
    result = invoke(ws, "evaluate", "--predictions", out, "--name", "unet2d__dice")
    assert result.exit_code == 1
    assert f"{out} is stale: made from dataset 000000000000" in said(result)
    assert not (ws.evaluation / "unet2d__dice.csv").exists()


@pytest.mark.workspace
def test_no_old_score_survives_when_nothing_current_is_left(converted_copy):
    ws = converted_copy
    out = reference_predictions(ws, "unet2d__dice", provenance.dataset_fingerprint(ws))
    assert invoke(ws, "leaderboard", "--no-figures").exit_code == 0
    assert len(pd.read_csv(ws.leaderboard)) == 1
    provenance.write_provenance(out, OLD)  # as if the dataset had been replaced since
    result = invoke(ws, "leaderboard", "--no-figures")
    assert result.exit_code == 1 and "now lists no model" in said(result)
    assert pd.read_csv(ws.leaderboard).empty


@pytest.mark.workspace
def test_ensemble_leaves_stale_folds_out_and_says_which(converted_copy):
    from ibsr_nnunet.nnunet.ensemble import select

    ws = converted_copy
    trainer = trainer_name(2, 3)
    fake_fold(ws, "2d", 0, trainer, provenance.dataset_fingerprint(ws))
    fake_fold(ws, "3d_fullres", 0, trainer, provenance.dataset_fingerprint(ws))
    fake_fold(ws, "2d", 1, trainer, OLD)
    fake_fold(ws, "3d_fullres", 1, trainer, None)  # made before provenance was recorded: not provably current
    selection = select(ws, trainer)
    assert selection.folds == (0,)
    stale_warning = selection.warnings[0]
    assert "stale folds left out" in stale_warning and f"{trainer}__nnUNetPlans__2d/fold_1" in stale_warning
    assert f"{trainer}__nnUNetPlans__3d_fullres/fold_1" in stale_warning
    for config in ("2d", "3d_fullres"):
        provenance.write_provenance(fold_folder(ws, config, 0, trainer=trainer), OLD)
    with pytest.raises(InputError, match="no finished nnU-Net fold made from this dataset.*stale folds left out"):
        select(ws, trainer)


@pytest.mark.workspace
def test_train_refuses_a_stale_fold_and_stale_plans_before_touching_them(planned_copy):
    ws = planned_copy
    trainer = trainer_name(2, 3)
    folder = fake_fold(ws, "2d", 0, trainer, OLD)
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", "2", "--iterations-per-epoch", "3", "--device", "cpu"]
    result = invoke(ws, *args)
    assert result.exit_code == 1, result.output
    assert f"{folder} (2d fold 0 of {trainer}) is stale: made from dataset 000000000000" in said(result)
    assert "--archive-stale" in said(result) and (folder / "checkpoint_final.pth").is_file()
    manifest = json.loads(ws.manifest.read_text())
    ws.manifest.write_text(json.dumps({**manifest, "fingerprint": "e" * 64}))
    result = invoke(ws, *args)
    assert result.exit_code == 1 and "nnUNetPlans.json is stale: planned from dataset" in said(result)
    assert "run `ibsr-nnunet plan` first" in said(result)


@pytest.mark.workspace
def test_train_refuses_or_archives_a_stale_fold_beside_the_one_it_trains(planned_copy):
    """Training rewrites the model folder's plans.json, dataset.json and dataset_fingerprint.json: a stale fold beside
    the one trained is refused, or archived with copies of them so that nnU-Net can still use it from there."""
    ws = planned_copy
    trainer = trainer_name(2, 3)
    fake_fold(ws, "2d", 0, trainer, provenance.dataset_fingerprint(ws))  # finished: train has nothing to do
    stale = fake_fold(ws, "2d", 1, trainer, OLD)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        (stale.parent / name).write_text(json.dumps({"from": "the old dataset"}))
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", "2", "--iterations-per-epoch", "3", "--device", "cpu"]
    refused = invoke(ws, *args)
    assert refused.exit_code == 1
    assert f"{stale} (2d fold 1 of {trainer}) is stale: made from dataset 000000000000" in said(refused)
    done = invoke(ws, *args, "--archive-stale")
    assert done.exit_code == 0, done.output
    assert "archived the stale 2d fold 1" in said(done) and not stale.exists()
    [archived] = list((ws.root / "stale").glob(f"*/nnUNet_results/*/{stale.parent.name}/fold_1"))
    assert (archived / "checkpoint_final.pth").is_file()
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert json.loads((archived.parent / name).read_text()) == {"from": "the old dataset"}
        assert (stale.parent / name).is_file()  # still in place for the folds that stay


@pytest.mark.workspace
def test_baseline_train_refuses_a_stale_run(converted_copy):
    ws = converted_copy
    run = ws.baselines / "unet2d__dice"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"x")
    provenance.write_provenance(run, OLD)
    result = invoke(ws, "baseline", "train", "--model", "unet2d", "--loss", "dice", "--epochs", "1", "--device", "cpu")
    assert result.exit_code == 1 and f"{run} (baseline run unet2d__dice) is stale" in said(result)
    result = invoke(ws, "baseline", "predict", "--model", "unet2d", "--loss", "dice", "--device", "cpu")
    assert result.exit_code == 1 and f"model unet2d__dice is stale ({run}: made from dataset 000000000000" in said(
        result) and "`ibsr-nnunet baseline train --model unet2d --loss dice --archive-stale` first" in said(result)


@pytest.mark.workspace
def test_convert_force_says_what_it_makes_stale(converted_copy, tmp_path):
    ws = converted_copy
    fingerprint = provenance.dataset_fingerprint(ws)
    fake_fold(ws, "2d", 0, trainer_name(2, 3), fingerprint)
    fake_fold(ws, "2d", 1, trainer_name(2, 3), fingerprint)
    run = ws.baselines / "unet2d__dice"
    run.mkdir(parents=True)
    provenance.write_provenance(run, fingerprint)
    reference_predictions(ws, "unet2d__dice", fingerprint)
    write_phantoms(tmp_path / "other", 8, layout="misa", size="small", seed=9)
    result = invoke(ws, "convert", tmp_path / "other", "--force")
    assert result.exit_code == 0, result.output
    assert "replacing the dataset makes stale: 2 trained folds, 1 baseline runs, 1 prediction sets" in said(result)
    assert provenance.dataset_fingerprint(ws) != fingerprint


@pytest.mark.workspace
def test_status_marks_stale_folds_and_submit_refuses_or_archives_them(planned_copy, monkeypatch):
    from ibsr_nnunet.campaign.jobs import save_jobs

    ws = planned_copy
    trainer = trainer_name(2, 3)
    stale = fake_fold(ws, "2d", 0, trainer, OLD)
    current = fake_fold(ws, "2d", 1, trainer, provenance.dataset_fingerprint(ws))
    save_jobs(ws, [{"kind": "fold", "name": "2d", "job_id": "5", "folds": [0, 1], "trainer": trainer, "epochs": 2,
                    "iterations": 3}])
    monkeypatch.setenv("PATH", "/nonexistent")  # no SLURM here: status reads the files only
    rows = {r["fold"]: r for r in json.loads(invoke(ws, "status", "--json").output)["jobs"]}
    assert (rows[0]["stale"], rows[0]["finished"]) == (True, False)
    assert (rows[1]["stale"], rows[1]["finished"]) == (False, True)
    base = ["submit", "--configs", "2d", "--folds", "0,1", "--epochs", "2", "--iterations-per-epoch", "3",
            "--gpus-per-job", "0", "--cpus-per-task", "1", "--dry-run"]
    refused = invoke(ws, *base)
    assert refused.exit_code == 1 and "stale runs would be trained on" in said(refused)
    assert f"{stale.relative_to(ws.root)} (made from dataset 000000000000" in said(refused)
    dry = invoke(ws, *base, "--archive-stale")
    assert dry.exit_code == 0, dry.output
    assert "--archive-stale would move 1 stale run(s) aside" in said(dry) and stale.is_dir()
    assert "--array=0 " in said(dry) + " " and "2d fold 1: already finished" in said(dry)
    assert current.is_dir()


@pytest.mark.workspace
def test_submit_counts_a_stale_fold_beside_the_planned_ones(planned_copy, monkeypatch):
    ws = planned_copy
    trainer = trainer_name(2, 3)
    stale = fake_fold(ws, "2d", 0, trainer, OLD)
    monkeypatch.setenv("PATH", "/nonexistent")  # a dry run: no SLURM needed
    base = ["submit", "--configs", "2d", "--folds", "1", "--epochs", "2", "--iterations-per-epoch", "3",
            "--gpus-per-job", "0", "--cpus-per-task", "1", "--dry-run"]
    refused = invoke(ws, *base)
    assert refused.exit_code == 1 and f"stale runs would be trained on: {stale.relative_to(ws.root)}" in said(refused)
    dry = invoke(ws, *base, "--archive-stale")
    assert dry.exit_code == 0, dry.output
    assert "--archive-stale would move 1 stale run(s) aside" in said(dry) and stale.is_dir()


# ---- the whole story, as a new user would live it -----------------------------------------------------------------

RESULTS = ("nnUNet_results", "baselines", "predictions", "evaluation", "figures", "best_configuration.json",
           "leaderboard.csv")  # what the steps after `convert` make; nnUNet_raw/_preprocessed are the inputs


def result_checksums(ws: Path) -> dict[str, str]:
    """Every result file of the workspace (locks and temporary files excepted) -> its sha256."""
    found = {}
    for top in RESULTS:
        path = ws / top
        for file in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []):
            relative = file.relative_to(ws)
            if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                found[str(relative)] = checksums.sha256(file)
    return found


@pytest.mark.integration
def test_a_replaced_dataset_never_reuses_a_result_and_keeps_each_in_place_or_in_the_archive(tmp_path):
    """convert A -> plan -> train a tiny fold -> ensemble -> baseline train/predict -> leaderboard; convert B --force:
    every later step refuses naming the stale artifact and no score of A survives in leaderboard.csv; the same steps
    with --archive-stale redo the work from B, and every file of A's results is unchanged in place or in
    stale/<time>/, an archived fold with the trainer-level files nnU-Net needs beside it."""
    ws = tmp_path / "ws"
    for name, seed in (("A", 1), ("B", 9)):
        write_phantoms(tmp_path / name, 6, layout="misa", size="small", seed=seed)
    train = ["train", "--fold", "0", "--config", "2d", "--epochs", "2", "--iterations-per-epoch", "3",
             "--device", "cpu"]
    baseline = ["--model", "unet2d", "--loss", "dice", "--device", "cpu"]
    tiny = ["--epochs", "1", "--iterations-per-epoch", "3", "--width", "8", "--patch-size", "32", "--batch-size", "2"]

    def steps(archive: list[str]) -> dict[str, str]:
        said_by = {}
        for step in (["plan", "--configs", "2d"], [*train, *archive], ["ensemble", "--device", "cpu"],
                     ["baseline", "train", *baseline, *tiny, *archive], ["baseline", "predict", *baseline],
                     ["leaderboard"]):
            done = cli(ws, *step)
            assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
            said_by[step[0]] = " ".join(done.stdout.split())
        return said_by

    assert cli(ws, "convert", str(tmp_path / "A")).returncode == 0
    steps([])
    old_fingerprint = read_manifest(Workspace.open(ws)).fingerprint
    assert set(pd.read_csv(ws / "leaderboard.csv")["dataset_fingerprint"]) == {old_fingerprint}
    before = result_checksums(ws)
    assert any(name.endswith("fold_0/checkpoint_final.pth") for name in before)
    assert {"best_configuration.json", "leaderboard.csv", "evaluation/unet2d__dice.json"} <= set(before)

    replaced = cli(ws, "convert", str(tmp_path / "B"), "--force")
    assert replaced.returncode == 0 and "makes stale: 1 trained folds, 1 baseline runs, 2 prediction sets" in \
        " ".join(replaced.stdout.split()), replaced.stdout
    assert cli(ws, "plan", "--configs", "2d").returncode == 0
    refused = cli(ws, *train)
    assert refused.returncode == 1 and "is stale: made from dataset " + old_fingerprint[:12] in " ".join(
        refused.stderr.split()), refused.stdout + refused.stderr
    board = cli(ws, "leaderboard", "--no-figures")
    assert board.returncode == 1 and pd.read_csv(ws / "leaderboard.csv").empty  # no score of A survives
    assert cli(ws, "ensemble").returncode == 1

    said_by = steps(["--archive-stale"])
    assert "archived the stale 2d fold 0" in said_by["train"]
    after = result_checksums(ws)
    archived = {}
    for file in sorted((ws / "stale").rglob("*")):
        if file.is_file():
            archived.setdefault(str(Path(*file.relative_to(ws / "stale").parts[1:])), set()).add(checksums.sha256(file))
    lost = [name for name, digest in before.items()
            if after.get(name) != digest and digest not in archived.get(name, ())]
    assert not lost, f"{len(lost)} files of A's results were overwritten or deleted: {lost}"
    [fold] = list((ws / "stale").glob("*/nnUNet_results/*/*2d/fold_0"))
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (fold.parent / name).is_file(), f"{fold.parent / name} is missing: nnU-Net cannot use the archived fold"
    new_fingerprint = read_manifest(Workspace.open(ws)).fingerprint
    board = pd.read_csv(ws / "leaderboard.csv")
    assert set(board["dataset_fingerprint"]) == {new_fingerprint} and new_fingerprint != old_fingerprint
    summary = json.loads((ws / "evaluation" / "unet2d__dice.json").read_text())
    assert summary["dataset_fingerprint"] == new_fingerprint and summary["cases"] == list(
        read_manifest(Workspace.open(ws)).split.heldout)
    assert np.isfinite(board["mean_dice"]).all()


@pytest.mark.workspace
def test_ensemble_archives_the_search_and_prediction_sets_of_another_dataset(converted_copy):
    from ibsr_nnunet.nnunet.ensemble import (
        BestConfiguration,
        archive_stale_search,
        best_configuration_file,
        write_best_configuration,
    )

    def search_of(fingerprint: str) -> BestConfiguration:
        return BestConfiguration("nnunet_2d", "the only one", {"nnunet_2d": 0.5}, 0.5, trainer_name(2, 3), ("2d",),
                                 (0,), (), {"nnunet_2d": ws.predictions / "nnunet_2d"}, fingerprint)

    ws = converted_copy
    model = fold_folder(ws, "2d", 0, trainer=trainer_name(2, 3)).parent
    write_best_configuration(ws, search_of(OLD))
    old = {best_configuration_file(ws): best_configuration_file(ws).read_text(),
           model / "crossval_results_folds_0" / "summary.json": "{}",
           ws.results_dataset / "ensembles" / "ensemble___x___0" / "summary.json": "{}",
           ws.results_dataset / "inference_information.json": "{}",
           ws.results_dataset / "ibsr_ensemble.log": "old log\n"}
    for path, text in old.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    stale_set = reference_predictions(ws, "nnunet_2d", OLD)
    current_set = reference_predictions(ws, "nnunet_3d_fullres", provenance.dataset_fingerprint(ws))
    lines = []
    archive_stale_search(ws, provenance.dataset_fingerprint(ws), [stale_set, current_set], say=lines.append)
    assert "archived the best-configuration search (made from dataset 000000000000" in lines[0]
    assert "archived prediction set nnunet_2d (made from dataset 000000000000" in lines[1] and len(lines) == 2
    [target] = [t for t in (ws.root / "stale").iterdir() if (t / "best_configuration.json").is_file()]
    moved = {path: target / path.relative_to(ws.root) for path in old}
    assert all(not path.exists() and moved[path].read_text() == text for path, text in old.items())
    assert list((ws.root / "stale").glob("*/predictions/nnunet_2d/IBSR_06.nii.gz")) and not stale_set.exists()
    assert current_set.is_dir()  # of this dataset: left for the run to replace
    write_best_configuration(ws, search_of(provenance.dataset_fingerprint(ws)))
    archive_stale_search(ws, provenance.dataset_fingerprint(ws), [current_set], say=lines.append)
    assert len(lines) == 2 and best_configuration_file(ws).is_file()  # a current search stays in place

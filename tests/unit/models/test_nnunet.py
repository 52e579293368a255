"""The nnU-Net kind on hand-made folders: a model is its folds and postprocessing, its signature follows the weights'
bytes, an unfinished fold or another dataset makes it refused, and a fold's progress is read from its log."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.models import load_model
from ibsr_nnunet.models.protocol import TrainingJob

TRAINER = "IbsrTrainer_3ep_10it"


def nnunet_set(ws: Workspace, provenance, name="nnunet_ensemble", configurations=("2d", "3d_fullres"), folds=(0, 1),
               plans=None):
    folder = ws.predictions / name
    provenance(folder)
    pkl = ws.results_dataset / "ensembles" / "postprocessing.pkl"
    pkl.parent.mkdir(parents=True, exist_ok=True)
    pkl.write_bytes(b"pkl")
    (folder / "model.json").write_text(json.dumps({
        "model": name, "trainer": TRAINER, "configurations": list(configurations), "folds": list(folds),
        "postprocessing_file": str(pkl), "axcodes": ["L", "P", "S"], **({"plans": plans} if plans else {})}))
    for configuration, plan in zip(configurations, plans or ["nnUNetPlans"] * len(configurations)):
        for fold in folds:
            fold_dir = ws.results_dataset / f"{TRAINER}__{plan}__{configuration}" / f"fold_{fold}"
            fold_dir.mkdir(parents=True)
            (fold_dir / "checkpoint_final.pth").write_bytes(b"w")
    return load_model(ws, name)


def test_an_nnunet_model_is_its_folds_and_postprocessing(ws, provenance):
    model = nnunet_set(ws, provenance)
    assert model.kind == "nnunet" and model.folder == ws.predictions / "nnunet_ensemble"
    assert [(m.plans, m.configuration) for m in model.members] == [("nnUNetPlans", "2d"), ("nnUNetPlans", "3d_fullres")]
    assert model.folds == (0, 1)
    assert [p.relative_to(ws.results_dataset).as_posix() for p in model.weight_files()] == [
        f"{TRAINER}__nnUNetPlans__2d/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__2d/fold_1/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_1/checkpoint_final.pth",
        "ensembles/postprocessing.pkl"]
    assert model.axcodes == ("L", "P", "S") and model.refusal() is None and model.remake == "ibsr-nnunet ensemble"


def test_a_cross_preset_ensemble_is_the_folds_of_its_two_plans(ws, provenance):
    model = nnunet_set(ws, provenance, name="nnunet_cross_preset_ensemble", configurations=("2d", "2d"),
                       plans=["nnUNetPlans", "nnUNetResEncUNetMPlans"], folds=(0,))
    assert [p.relative_to(ws.results_dataset).as_posix() for p in model.weight_files()] == [
        f"{TRAINER}__nnUNetPlans__2d/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetResEncUNetMPlans__2d/fold_0/checkpoint_final.pth", "ensembles/postprocessing.pkl"]
    assert [m.name for m in model.members] == ["nnunet_2d", "nnunet_resencm_2d"] and model.refusal() is None


@pytest.mark.parametrize("plans", [["nnUNetPlans", "../nnUNetPlans"], ["nnUNetPlans"], ["MyPlans", "nnUNetPlans"]])
def test_a_record_whose_plans_are_not_a_presets_is_refused(ws, provenance, plans):
    folder = ws.predictions / "nnunet_ensemble"
    nnunet_set(ws, provenance)
    record = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**record, "plans": plans}))
    model = load_model(ws, "nnunet_ensemble")
    assert "is not" in model.refusal() and "run `ibsr-nnunet ensemble` again" in model.refusal()


def test_the_signature_changes_with_the_weights_bytes(ws, provenance):
    model = nnunet_set(ws, provenance)
    before = model.signature()
    assert model.signature() == before
    (model.weight_files()[0]).write_bytes(b"retrained")
    assert model.signature() != before


def test_an_nnunet_model_with_an_unfinished_fold_is_refused(ws, provenance):
    model = nnunet_set(ws, provenance)
    (model.weight_files()[3]).unlink()
    assert "uses 3d_fullres fold 1" in model.refusal() and model.refusal().endswith("then segment.")
    assert model.refusal(then="predict").endswith("then predict.")


def test_a_stale_model_is_refused(ws, provenance):
    model = nnunet_set(ws, provenance)
    provenance(model.folder, "0" * 64)
    assert model.refusal().startswith("model nnunet_ensemble is stale") and "`ibsr-nnunet ensemble`" in model.refusal()


def test_a_folds_progress_is_read_from_its_log_through_the_configurations_model(ws):
    fold = ws.results_dataset / f"{TRAINER}__nnUNetPlans__2d" / "fold_1"
    fold.mkdir(parents=True)
    (fold / "training_log_1.txt").write_text("".join(
        f"2026-11-30 10:00:0{e}.000001: Epoch {e}\n2026-11-30 10:00:0{e}.000002: train_loss -0.{e + 1}\n"
        f"2026-11-30 10:00:0{e}.000003: val_loss -0.{e + 2}\n"
        f"2026-11-30 10:00:0{e}.000004: Pseudo dice [0.{e + 5}, 0.{e + 6}]\n"
        f"2026-11-30 10:00:0{e}.000005: Epoch time: {e + 2}.5 s\n" for e in range(3))
        + "2026-11-30 10:00:09.000001: Epoch 3\n")  # epoch 3 began, not finished
    progress = load_model(ws, "nnunet_2d").progress(TrainingJob(epochs=10, fold=1, trainer=TRAINER))
    assert (progress.folder, progress.epochs_done, progress.finished) == (fold, 3, False)
    assert progress.val_loss == pytest.approx(-0.4) and progress.pseudo_dice == pytest.approx(0.75)
    assert progress.epoch_seconds == (2.5, 3.5, 4.5) and progress.runs == () and progress.validation_dice is None


@pytest.mark.parametrize("name, job", [
    ("nnunet_ensemble", TrainingJob(10, 0, TRAINER)),  # its folds are jobs of its configurations
    ("nnunet_2d", TrainingJob(10, None, TRAINER)),  # every nnU-Net job trains one fold
    ("nnunet_3d_fullres", TrainingJob(10, 0, None)),  # ... with one trainer
    ("unet2d__dice_ce", TrainingJob(10, 2)),  # a baseline trains in one run
])
def test_a_job_the_kind_never_trains_is_refused(ws, name, job):
    with pytest.raises(InputError, match=f"^model {name} is trained by no campaign job|trained in one run"):
        load_model(ws, name).progress(job)

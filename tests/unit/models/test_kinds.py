"""models/nnunet.py and models/baseline.py against hand-made folders: provenance, weights, readiness, orientation."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.core.locks import Lock, lock_path
from ibsr_nnunet.core.provenance import PROVENANCE_FILE
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.models import load_model

FINGERPRINT = "f" * 64
TRAINER = "IbsrTrainer_3ep_10it"


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    ws = Workspace.open(tmp_path / "ws")
    monkeypatch.setattr("ibsr_nnunet.models.protocol.dataset_fingerprint", lambda _: FINGERPRINT)
    return ws


def provenance(folder, fingerprint=FINGERPRINT):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROVENANCE_FILE).write_text(json.dumps({"dataset_fingerprint": fingerprint}))


def nnunet_set(ws: Workspace, name="nnunet_ensemble", configurations=("2d", "3d_fullres"), folds=(0, 1)):
    folder = ws.predictions / name
    provenance(folder)
    pkl = ws.results_dataset / "ensembles" / "postprocessing.pkl"
    pkl.parent.mkdir(parents=True, exist_ok=True)
    pkl.write_bytes(b"pkl")
    (folder / "model.json").write_text(json.dumps({
        "model": name, "trainer": TRAINER, "configurations": list(configurations), "folds": list(folds),
        "postprocessing_file": str(pkl), "axcodes": ["L", "P", "S"]}))
    for configuration in configurations:
        for fold in folds:
            fold_dir = ws.results_dataset / f"{TRAINER}__nnUNetPlans__{configuration}" / f"fold_{fold}"
            fold_dir.mkdir(parents=True)
            (fold_dir / "checkpoint_final.pth").write_bytes(b"w")
    return load_model(ws, name)


def test_an_nnunet_model_is_its_folds_and_postprocessing(ws):
    model = nnunet_set(ws)
    assert model.kind == "nnunet" and model.folder == ws.predictions / "nnunet_ensemble"
    assert model.configurations == ("2d", "3d_fullres") and model.folds == (0, 1)
    assert [p.relative_to(ws.results_dataset).as_posix() for p in model.weight_files()] == [
        f"{TRAINER}__nnUNetPlans__2d/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__2d/fold_1/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_1/checkpoint_final.pth",
        "ensembles/postprocessing.pkl"]
    assert model.axcodes == ("L", "P", "S") and model.refusal() is None and model.remake == "ibsr-nnunet ensemble"


def test_the_signature_changes_with_the_weights_bytes(ws):
    model = nnunet_set(ws)
    before = model.signature()
    assert model.signature() == before
    (model.weight_files()[0]).write_bytes(b"retrained")
    assert model.signature() != before


def test_an_nnunet_model_with_an_unfinished_fold_is_refused(ws):
    model = nnunet_set(ws)
    (model.weight_files()[3]).unlink()
    assert "uses 3d_fullres fold 1" in model.refusal() and model.refusal().endswith("then segment.")
    assert model.refusal(then="predict").endswith("then predict.")


def test_a_stale_model_is_refused(ws):
    model = nnunet_set(ws)
    provenance(model.folder, "0" * 64)
    assert model.refusal().startswith("model nnunet_ensemble is stale") and "`ibsr-nnunet ensemble`" in model.refusal()


def test_a_baseline_is_its_best_weights_and_its_orientation(ws):
    run = ws.baselines / "unet2d__dice_ce"
    provenance(run)
    model = load_model(ws, "unet2d__dice_ce")
    assert model.kind == "baseline" and not model.trained() and "is not trained in this workspace" in model.refusal()
    (run / "best.pt").write_bytes(b"w")
    (run / "orientation.json").write_text(json.dumps({"axcodes": ["R", "I", "A"], "slicing_axis": 2}))
    assert model.trained() and model.weight_files() == [run / "best.pt"] and model.axcodes == ("R", "I", "A")
    assert model.remake == "ibsr-nnunet baseline predict --model unet2d --loss dice_ce"
    assert "has not finished training" in model.refusal()
    (run / "run.json").write_text(json.dumps({"finished": True, "best_val_dice": 0.75, "train_seconds": 12.0}))
    assert model.refusal() is None
    assert model.validation().columns == {"internal_val_dice": 0.75} and model.training_seconds() == 12.0
    with Lock(lock_path(run), "baseline run", "ibsr-nnunet baseline train"):
        assert "is being trained right now" in model.refusal()

"""The nnU-Net kind on hand-made folders: a model is its folds and postprocessing, its signature follows the weights'
bytes, and an unfinished fold or another dataset makes it refused."""

from __future__ import annotations

import json

from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.models import load_model

TRAINER = "IbsrTrainer_3ep_10it"


def nnunet_set(ws: Workspace, provenance, name="nnunet_ensemble", configurations=("2d", "3d_fullres"), folds=(0, 1)):
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


def test_an_nnunet_model_is_its_folds_and_postprocessing(ws, provenance):
    model = nnunet_set(ws, provenance)
    assert model.kind == "nnunet" and model.folder == ws.predictions / "nnunet_ensemble"
    assert model.configurations == ("2d", "3d_fullres") and model.folds == (0, 1)
    assert [p.relative_to(ws.results_dataset).as_posix() for p in model.weight_files()] == [
        f"{TRAINER}__nnUNetPlans__2d/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__2d/fold_1/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth",
        f"{TRAINER}__nnUNetPlans__3d_fullres/fold_1/checkpoint_final.pth",
        "ensembles/postprocessing.pkl"]
    assert model.axcodes == ("L", "P", "S") and model.refusal() is None and model.remake == "ibsr-nnunet ensemble"


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

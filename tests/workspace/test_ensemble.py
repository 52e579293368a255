"""`ensemble` on real nnunetv2: 2d and 3d_fullres folds 0 and 1 (one through nnU-Net's own CLI), three prediction
sets."""

import contextlib
import json
import os
import shutil

import pytest

from helpers import (
    fake_fold,
    invoke,
    said,
)
from ibsr_nnunet.core import provenance
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.locks import Lock, lock_path
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.ensemble import select
from ibsr_nnunet.nnunet.paths import fold_folder
from ibsr_nnunet.nnunet.presets import PRESET_TABLE
from ibsr_nnunet.segment import choose_model


def test_ensemble_refuses_without_trained_folds(converted_copy):
    result = invoke(converted_copy, "ensemble", "--device", "cpu")
    assert result.exit_code == 1
    assert "no finished nnU-Net fold" in said(result) and "ibsr-nnunet train" in said(result)


def test_select_uses_common_folds_and_says_why(converted_copy):
    ws = converted_copy  # select() reads the converted dataset (its provenance) first
    for fold in (0, 1, 2):
        fake_fold(ws, "IbsrTrainer", "2d", fold)
    for fold in (0, 1):
        fake_fold(ws, "IbsrTrainer", "3d_fullres", fold)
    fake_fold(ws, "IbsrTrainer_2ep_3it", "2d", 4)
    unfinished = ws.results_dataset / "IbsrTrainer__nnUNetPlans__3d_fullres" / "fold_3"
    unfinished.mkdir()
    (unfinished / "checkpoint_latest.pth").write_bytes(b"")
    selection = select(ws)
    assert (selection.trainer, selection.configurations, selection.folds) == (
        "IbsrTrainer", ("2d", "3d_fullres"), (0, 1))
    assert any("2d folds [2] are not finished in every configuration" in w for w in selection.warnings)
    assert any("only folds 0, 1 of 5" in w for w in selection.warnings)

    short = select(ws, "IbsrTrainer_2ep_3it")
    assert short.configurations == ("2d",) and short.folds == (4,)
    assert any("3d_fullres has no finished fold" in w for w in short.warnings)
    with pytest.raises(InputError, match="--trainer nope has no finished fold"):
        select(ws, "nope")
    shutil.rmtree(ws.results_dataset / "IbsrTrainer__nnUNetPlans__2d")
    fake_fold(ws, "IbsrTrainer", "2d", 4)
    with pytest.raises(InputError, match="none in common"):
        select(ws, "IbsrTrainer")


def test_select_searches_every_preset_on_the_folds_of_the_one_with_most(converted_copy):
    ws = converted_copy
    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            fake_fold(ws, "IbsrTrainer", config, fold, plans="nnUNetResEncUNetMPlans")
    fake_fold(ws, "IbsrTrainer", "2d", 0)
    fake_fold(ws, "IbsrTrainer", "2d", 1, plans="nnUNetResEncUNetLPlans")
    selection = select(ws)
    # resenc-m has folds 0 and 1 in both configurations: they are the folds; the others lack one of them
    assert selection.folds == (0, 1)
    assert [m.name for m in selection.members] == ["nnunet_resencm_2d", "nnunet_resencm_3d_fullres"]
    assert [w for w in selection.warnings if "left out:" in w] == [
        "2d is left out: it has folds [0] finished, not all of 0, 1 (resenc-m's); train them, or pass --presets "
        "default to search it on its own folds.",
        "resenc-l 2d is left out: it has folds [1] finished, not all of 0, 1 (resenc-m's); train them, or pass "
        "--presets resenc-l to search it on its own folds."]
    alone = select(ws, presets=(PRESET_TABLE["resenc-l"],))
    assert [m.label for m in alone.members] == ["resenc-l 2d"] and alone.folds == (1,)
    assert alone.described() == "resenc-l 2d"
    assert any(w.startswith("3d_fullres has no finished fold of IbsrTrainer (resenc-l): no 2d+3d_fullres ensemble "
                            "(resenc-l), only 2d") for w in alone.warnings)
    fake_fold(ws, "IbsrTrainer", "3d_fullres", 0, plans="nnUNetResEncUNetLPlans")
    with pytest.raises(InputError, match=r"IbsrTrainer \(resenc-l\): 2d has folds \[1\] and 3d_fullres has folds "
                                         r"\[0\] finished, none in common; train a common fold, or leave the preset "
                                         r"out with --presets\.$"):
        select(ws)
    both = select(ws, presets=(PRESET_TABLE["default"], PRESET_TABLE["resenc-m"]))
    assert [m.name for m in both.members] == ["nnunet_resencm_2d", "nnunet_resencm_3d_fullres"]
    with pytest.raises(InputError, match="no finished nnU-Net fold of preset resenc-xl"):
        select(ws, presets=(PRESET_TABLE["resenc-xl"],))


def test_ensemble_leaves_out_a_fold_being_trained(converted_copy):
    ws = converted_copy
    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            fake_fold(ws, "IbsrTrainer", config, fold)
    busy = fold_folder(ws, "3d_fullres", 1, trainer="IbsrTrainer")
    with Lock(lock_path(busy), "3d_fullres fold 1", "ibsr-nnunet train --fold 1 --config 3d_fullres"):
        selection = select(ws)
        assert selection.folds == (0,)
        assert any(f"folds being trained left out: IbsrTrainer__nnUNetPlans__3d_fullres/fold_1 (is being trained "
                   f"right now by PID {os.getpid()} on " in w and "run `ibsr-nnunet ensemble` again when they finish"
                   in w for w in selection.warnings), selection.warnings
    assert select(ws).folds == (0, 1)  # its training ended: it is used again


def nnunet_model(ws: Workspace) -> str:
    """An nnunet_2d prediction set recorded as made from folds 0 and 1 of IbsrTrainer (fake, finished folds)."""
    for fold in (0, 1):
        fake_fold(ws, "IbsrTrainer", "2d", fold)
    folder = ws.predictions / "nnunet_2d"
    folder.mkdir(parents=True)
    postprocessing = ws.results_dataset / "crossval_results_folds_0_1" / "postprocessing.pkl"
    (folder / "model.json").write_text(json.dumps({"model": "nnunet_2d", "trainer": "IbsrTrainer",
                                                   "configurations": ["2d"], "folds": [0, 1],
                                                   "postprocessing_file": str(postprocessing)}))
    provenance.write_provenance(folder, provenance.dataset_fingerprint(ws))
    return "nnunet_2d"


@pytest.mark.parametrize("unfinish, why", [
    ("lock", r"is being trained right now by PID \d+ on .*`ibsr-nnunet train --fold 1 --config 2d`"),
    ("no final checkpoint", r"has no checkpoint_final\.pth \(its training has not finished\)"),
])
def test_segment_refuses_an_nnunet_model_whose_fold_is_not_finished(converted_copy, unfinish, why):
    ws = converted_copy
    model = nnunet_model(ws)
    assert choose_model(ws, model).model.folds == (0, 1)
    fold = fold_folder(ws, "2d", 1, trainer="IbsrTrainer")
    sentence = rf"model nnunet_2d uses 2d fold 1 \({fold}\), which {why}; let its `ibsr-nnunet train --fold 1 "
    with contextlib.ExitStack() as held:
        if unfinish == "lock":
            held.enter_context(Lock(lock_path(fold), "2d fold 1", "ibsr-nnunet train --fold 1 --config 2d"))
        else:
            (fold / "checkpoint_final.pth").unlink()
        with pytest.raises(InputError, match=sentence):
            choose_model(ws, model)

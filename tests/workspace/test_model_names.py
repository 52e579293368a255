"""Model names are names: one pattern and length limit (core/names.py) for `segment --model`, `evaluate --name`,
`baseline predict` and `submit --baselines`, so no name climbs out of the workspace; and `segment` loads nnU-Net
folds and postprocessing only from the workspace's own nnU-Net results."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import copy_workspace, invoke, said
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.provenance import dataset_fingerprint, write_provenance
from ibsr_nnunet.core.workspace import Workspace

NOT_A_NAME = "is not a usable model name: use letters, digits"
TOO_LONG = "is 300 characters long, more than the 100 a model name may have"
NOT_NAMES = [("../x", NOT_A_NAME), ("/abs/dir", NOT_A_NAME), ("a/b", NOT_A_NAME), ("..", NOT_A_NAME),
             (".hidden", NOT_A_NAME), ("", NOT_A_NAME), ("a b", NOT_A_NAME), ("x" * 300, TOO_LONG)]


@pytest.mark.parametrize("name, problem", NOT_NAMES, ids=["up", "absolute", "slash", "dotdot", "hidden", "empty",
                                                          "space", "300-chars"])
def test_a_model_name_is_one_file_name_of_limited_length(name, problem):
    from ibsr_nnunet.core.names import check_model_name

    with pytest.raises(InputError, match=rf"^--name '.*' {problem}.*; pass a model name such as "):
        check_model_name(name, "--name")


@pytest.mark.parametrize("name", ["unet2d__dice_ce", "nnunet_ensemble", "my-model.v2", "x" * 100])
def test_model_names_that_are_names_pass(name):
    from ibsr_nnunet.core.names import check_model_name

    assert check_model_name(name, "--name") == name


@pytest.mark.parametrize("name, problem", [
    ("../unet2d__dice_ce", NOT_A_NAME),
    ("unet2d__dice_ce/..", NOT_A_NAME),
    ("unet2d__" + "x" * 292, TOO_LONG),
    ("unet2d__hinge", "is not MODEL__LOSS with MODEL in unet2d"),
    ("unet2d", "is not MODEL__LOSS"),
], ids=["up", "down-and-up", "300-chars", "unknown-loss", "no-loss"])
def test_baseline_names_and_submit_baselines(name, problem):
    from baselines.registry import check_baseline_name
    from ibsr_nnunet.campaign.submit import SubmitRequest

    with pytest.raises(InputError, match=rf"^--baselines '.*' {problem}"):
        check_baseline_name(name, "--baselines")
    with pytest.raises(InputError, match=rf"^--baselines '.*' {problem}"):
        SubmitRequest(baselines=(name,))


def test_submit_refuses_a_baseline_path_on_the_command_line(tmp_path):
    result = invoke(tmp_path / "ws", "submit", "--baselines", "../unet2d__dice_ce", "--dry-run")
    assert result.exit_code == 2 and "'../unet2d__dice_ce' is not one of MODEL__LOSS" in said(result)


@pytest.fixture(scope="module")
def trained(trained_baseline_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's converted phantom workspace with its briefly trained unet2d__dice_ce."""
    return copy_workspace(trained_baseline_ws, tmp_path_factory.mktemp("names") / "ws")


@pytest.mark.parametrize("where, problem", [
    ("../elsewhere", NOT_A_NAME),  # climbs out of baselines/
    ("{absolute}", NOT_A_NAME),  # replaces baselines/ altogether
    ("x" * 300, TOO_LONG),
    ("nnunet_custom", "is not an nnU-Net model; pass one of nnunet_2d, nnunet_3d_fullres, nnunet_ensemble"),
    ("unet2d__hinge", "is not MODEL__LOSS"),
], ids=["up", "absolute", "300-chars", "unknown-nnunet", "unknown-loss"])
def test_segment_model_is_a_name_inside_the_workspace(trained, phantom_root, tmp_path, where, problem):
    ws = copy_workspace(trained, tmp_path / "ws")
    outside = tmp_path / "elsewhere"  # working run folders outside baselines/: never used through --model
    for copy in (outside, ws.root / "elsewhere"):
        shutil.copytree(ws.baselines / "unet2d__dice_ce", copy)
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    model = where.format(absolute=outside)
    out = tmp_path / "out"
    result = invoke(ws, "segment", str(scan), "--output", str(out), "--model", model, "--device", "cpu")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert problem in said(result) and not out.exists()


def test_evaluate_refuses_a_300_character_name_in_one_sentence(converted_copy, tmp_path):
    predictions = Path(shutil.copytree(converted_copy.raw_dataset / "labelsTs", tmp_path / "perfect"))
    result = invoke(converted_copy, "evaluate", "--predictions", str(predictions), "--name", "x" * 300, "--jobs", "1")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"--name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' {TOO_LONG}" in said(result)
    assert not converted_copy.evaluation.exists() or not list(converted_copy.evaluation.iterdir())


# ---- nnU-Net model records ----------------------------------------------------------------------------------------

def write_record(ws: Workspace, **changes) -> Path:
    """predictions/nnunet_2d/model.json as `ensemble` writes it, with `changes`; recorded as made from this dataset."""
    folder = ws.predictions / "nnunet_2d"
    folder.mkdir(parents=True, exist_ok=True)
    model = ws.results_dataset / "IbsrTrainer_3ep_10it__nnUNetPlans__2d"
    pkl = model / "crossval_results_folds_0" / "postprocessing.pkl"
    info = {"model": "nnunet_2d", "trainer": "IbsrTrainer_3ep_10it", "configurations": ["2d"], "folds": [0],
            "postprocessing_file": str(pkl), "axcodes": ["R", "A", "S"], **changes}
    (folder / "model.json").write_text(json.dumps(info))
    write_provenance(folder, dataset_fingerprint(ws), model="nnunet_2d")
    return folder / "model.json"


def test_a_record_inside_the_workspace_is_taken(converted_copy):
    from ibsr_nnunet.nnunet.paths import fold_folder
    from ibsr_nnunet.segment import choose_model

    write_record(converted_copy)
    fold = fold_folder(converted_copy, "2d", 0, trainer="IbsrTrainer_3ep_10it")
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_bytes(b"")  # a finished fold (segment refuses unfinished ones)
    model = choose_model(converted_copy, "nnunet_2d")
    assert model.model.trainer == "IbsrTrainer_3ep_10it" and model.model.folds == (0,)


@pytest.mark.parametrize("changes", [
    {"postprocessing_file": "/tmp/elsewhere/postprocessing.pkl"},  # nnU-Net would unpickle it
    {"postprocessing_file": "{results}/../../../elsewhere.pkl"},
    {"trainer": "../../../elsewhere"},  # the folds' folder would climb out of nnUNet_results
    {"trainer": "SomeoneElsesTrainer"},
    {"configurations": ["../x"]},
    {"configurations": []},
    {"folds": [7]},
    {"folds": ["0"]},
    {"folds": "0"},
], ids=["pkl-outside", "pkl-climbs-out", "trainer-climbs-out", "foreign-trainer", "configuration-path",
        "no-configuration", "fold-7", "fold-string", "folds-not-a-list"])
def test_a_record_that_points_outside_the_results_is_refused(converted_copy, changes):
    from ibsr_nnunet.segment import choose_model

    changes = {k: v.format(results=converted_copy.results_dataset) if isinstance(v, str) else v
               for k, v in changes.items()}
    record_file = write_record(converted_copy, **changes)
    with pytest.raises(InputError, match=rf"^{record_file} is not a model record of this workspace .* inside "
                                         rf"{converted_copy.results_dataset.resolve()}\); run `ibsr-nnunet ensemble`"):
        choose_model(converted_copy, "nnunet_2d")


def test_an_unreadable_record_is_refused(converted_copy):
    from ibsr_nnunet.segment import choose_model

    record_file = write_record(converted_copy)
    record_file.write_text("{not json")
    with pytest.raises(InputError, match="is not a model record of this workspace"):
        choose_model(converted_copy, "nnunet_2d")

"""nnunet/prediction_record.py: a prediction set's model.json written and read back exactly; a hand-made record
without the optional keys; a cut-short or malformed record refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.nnunet.prediction_record import (
    PredictionRecord,
    prediction_record_path,
    read_prediction_record,
    write_prediction_record,
)

REWRITE = r"run `ibsr-nnunet ensemble` again to rewrite it\.$"


def test_a_written_record_reads_back_equal(tmp_path):
    record = PredictionRecord("nnunet_ensemble", "IbsrTrainer", ("2d", "3d_fullres"), (0, 1, 4),
                              Path("/ws/nnUNet_results/x/postprocessing.pkl"),
                              ("remove_all_but_largest_component_from_segmentation([3])",), 0.8125, ("R", "A", "S"))
    write_prediction_record(tmp_path, record)
    assert read_prediction_record(tmp_path) == record
    saved = json.loads(prediction_record_path(tmp_path).read_text())
    assert saved == {"model": "nnunet_ensemble", "trainer": "IbsrTrainer", "configurations": ["2d", "3d_fullres"],
                     "folds": [0, 1, 4], "postprocessing": ["remove_all_but_largest_component_from_segmentation([3])"],
                     "postprocessing_file": "/ws/nnUNet_results/x/postprocessing.pkl", "crossval_dice": 0.8125,
                     "axcodes": ["R", "A", "S"], "plans": ["nnUNetPlans", "nnUNetPlans"]}


def test_a_cross_preset_record_reads_back_its_members(tmp_path):
    record = PredictionRecord("nnunet_cross_preset_ensemble", "IbsrTrainer", ("3d_fullres", "2d"), (0,),
                              Path("/ws/pp.pkl"), plans=("nnUNetPlans", "nnUNetResEncUNetLPlans"))
    write_prediction_record(tmp_path, record)
    again = read_prediction_record(tmp_path)
    assert [(m.plans, m.configuration, m.name) for m in again.members] == [
        ("nnUNetPlans", "3d_fullres", "nnunet_3d_fullres"), ("nnUNetResEncUNetLPlans", "2d", "nnunet_resencl_2d")]


def test_a_record_without_plans_is_the_default_plans(tmp_path):
    prediction_record_path(tmp_path).write_text(json.dumps({"trainer": "IbsrTrainer", "configurations": ["2d"],
                                                            "folds": [0]}))
    assert read_prediction_record(tmp_path).plans == ("nnUNetPlans",)


def test_no_record_is_none(tmp_path):
    assert read_prediction_record(tmp_path) is None


def test_a_hand_made_record_has_no_postprocessing_dice_or_axcodes(tmp_path):
    prediction_record_path(tmp_path).write_text(json.dumps({"trainer": "IbsrTrainer_2ep_3it",
                                                            "configurations": ["2d"], "folds": [0]}))
    found = read_prediction_record(tmp_path)
    assert found == PredictionRecord(tmp_path.name, "IbsrTrainer_2ep_3it", ("2d",), (0,), None)
    assert found.as_record()["postprocessing_file"] is None and found.as_record()["folds"] == [0]


def test_a_cut_short_record_is_one_sentence(tmp_path):
    prediction_record_path(tmp_path).write_text('{"trainer": "IbsrTr')
    with pytest.raises(InputError, match=rf"^{tmp_path / 'model.json'} is not valid JSON \(cut short or edited by "
                                         rf"hand: .*\); {REWRITE}"):
        read_prediction_record(tmp_path)


NOT_A_RECORD = r"is not an nnU-Net model record"


@pytest.mark.parametrize("content, why", [
    ([], NOT_A_RECORD + r" \(not a JSON object\)"),
    ({"configurations": ["2d"], "folds": [0]}, NOT_A_RECORD + r" \(KeyError: 'trainer'\)"),
    ({"trainer": "T", "configurations": ["2d"], "folds": ["0"]},
     NOT_A_RECORD + r" \(TypeError: trainer must be a name, "),
    ({"trainer": "T", "configurations": ["2d"], "folds": [True]}, NOT_A_RECORD + r" \(TypeError: "),
    ({"trainer": "T", "configurations": "2d", "folds": [0]}, NOT_A_RECORD + r" \(TypeError: "),
    ({"trainer": "T", "configurations": ["2d"], "folds": [0], "crossval_dice": "high"},
     NOT_A_RECORD + r" \(ValueError: could not convert"),
])
def test_a_malformed_record_is_one_sentence(tmp_path, content, why):
    prediction_record_path(tmp_path).write_text(json.dumps(content))
    with pytest.raises(InputError, match=rf"^{tmp_path / 'model.json'} {why}.*; {REWRITE}"):
        read_prediction_record(tmp_path)

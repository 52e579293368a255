"""nnunet/plans.py: the splits, the plan stamp, nnU-Net's preprocessed dataset.json and fingerprint, written and
read back exactly; each cut short or of another shape refused in one sentence."""

from __future__ import annotations

import json

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import fingerprint_file, plan_stamp, plans_file, splits_file
from ibsr_nnunet.nnunet.plans import (
    PlanStamp,
    read_dataset_fingerprint,
    read_plan_stamp,
    read_plans,
    read_preprocessed_dataset_json,
    read_splits,
    write_plan_stamp,
    write_splits,
)

REPLAN = r"run `ibsr-nnunet plan --force` to plan and preprocess again\.$"
FOLDS = [{"train": ["IBSR_01"], "val": ["IBSR_02"]}, {"train": ["IBSR_02"], "val": ["IBSR_01"]}]


@pytest.fixture
def ws(tmp_path) -> Workspace:
    workspace = Workspace(tmp_path / "ws")
    workspace.preprocessed_dataset.mkdir(parents=True)
    return workspace


def test_splits_round_trip(ws):
    assert write_splits(ws.preprocessed_dataset, FOLDS) == splits_file(ws)
    assert read_splits(ws) == FOLDS


def test_cut_short_splits_are_one_sentence(ws):
    write_splits(ws.preprocessed_dataset, FOLDS)
    splits_file(ws).write_text(splits_file(ws).read_text()[:20])
    with pytest.raises(InputError, match=rf"^{splits_file(ws)} is not valid JSON .*; {REPLAN}"):
        read_splits(ws)


def test_plan_stamp_round_trip(ws):
    assert read_plan_stamp(ws) is None  # no plan finished
    write_plan_stamp(ws, "f" * 64, ("3d_fullres", "2d"))
    stamp = read_plan_stamp(ws)
    assert stamp == PlanStamp("f" * 64, ("2d", "3d_fullres"), stamp.planned) and len(stamp.planned) == 19
    assert json.loads(plan_stamp(ws).read_text())["configurations"] == ["2d", "3d_fullres"]


def test_a_stamp_not_made_by_us_has_no_fingerprint(ws):
    plan_stamp(ws).write_text(json.dumps(["not", "a", "stamp"]))
    assert read_plan_stamp(ws) == PlanStamp(None, ())


def test_a_cut_short_stamp_is_one_sentence(ws):
    write_plan_stamp(ws, "f" * 64, ("2d",))
    plan_stamp(ws).write_text(plan_stamp(ws).read_text()[:30])
    with pytest.raises(InputError, match=rf"^{plan_stamp(ws)} is not valid JSON .*; {REPLAN}"):
        read_plan_stamp(ws)


def test_plans_without_configurations_are_one_sentence(ws):
    plans_file(ws).write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    with pytest.raises(InputError, match=rf"^{plans_file(ws)} holds no nnU-Net plans .*; {REPLAN}"):
        read_plans(ws)
    plans_file(ws).write_text(json.dumps({"configurations": {"2d": {"batch_size": 12}}}))
    assert read_plans(ws)["configurations"]["2d"]["batch_size"] == 12


def test_preprocessed_dataset_json_and_fingerprint(ws):
    assert read_dataset_fingerprint(ws) is None
    fingerprint_file(ws).write_text(json.dumps({"spacings": [[1, 1.5, 1]]}))
    assert read_dataset_fingerprint(ws) == {"spacings": [[1, 1.5, 1]]}
    with pytest.raises(InputError, match=rf"^{ws.preprocessed_dataset / 'dataset.json'} does not exist; {REPLAN}"):
        read_preprocessed_dataset_json(ws)
    (ws.preprocessed_dataset / "dataset.json").write_text(json.dumps({"numTraining": 8}))
    assert read_preprocessed_dataset_json(ws) == {"numTraining": 8}

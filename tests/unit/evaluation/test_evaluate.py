"""evaluation/evaluate.py's summary `<name>.json`: written and read back exactly, with the keys on disk unchanged; a
summary of an older metric set read with its defaults and said outdated; a cut-short or malformed one refused in one
sentence, and counted as no evaluation where it is only asked whether one is current."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.evaluation.evaluate import (
    METRICS,
    METRICS_VERSION,
    EvaluationSummary,
    is_current,
    read_summary,
    recorded_summary,
    summary_path,
    write_summary,
)

FINGERPRINT = "f" * 64
REWRITE = r"run `ibsr-nnunet evaluate --name perfect` on its predictions again to rewrite it\.$"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.evaluation.mkdir(parents=True)
    (ws.evaluation / "perfect.csv").write_text("model,case\n")  # a summary counts with its per-case table only
    return ws


def summary(predictions: Path, **changed) -> EvaluationSummary:
    fields = dict(
        model="perfect", predictions=predictions, cases=("IBSR_06", "IBSR_07"), metrics=METRICS,
        metrics_version=METRICS_VERSION, nsd_tolerance_mm=1.0,
        mean={"CSF": {"dice": 0.75, "hd": math.inf}, "GM": {"dice": 0.875, "hd": 2.5}},
        std={"CSF": {"dice": 0.125, "hd": 0.0}, "GM": {"dice": 0.0625, "hd": 0.5}}, mean_dice=0.8125,
        newest_prediction_mtime=1000.0, dataset_fingerprint=FINGERPRINT,
        reference_sha256={"IBSR_06": "a" * 64, "IBSR_07": "b" * 64})
    return EvaluationSummary(**{**fields, **changed})


def test_a_written_summary_reads_back_equal_with_its_keys(ws, tmp_path):
    written = summary(tmp_path / "predictions")
    write_summary(ws, written)
    assert read_summary(ws, "perfect") == written and recorded_summary(ws, "perfect") == written
    saved = json.loads(summary_path(ws, "perfect").read_text())
    assert list(saved) == ["model", "predictions", "cases", "metrics", "metrics_version", "nsd_tolerance_mm", "mean",
                           "std", "mean_dice", "newest_prediction_mtime", "dataset_fingerprint", "reference_sha256"]
    assert saved["predictions"] == str(tmp_path / "predictions") and saved["cases"] == ["IBSR_06", "IBSR_07"]
    assert saved["metrics"] == ["dice", "hd", "hd95", "avd", "nsd"] and saved["metrics_version"] == 3
    assert saved["mean"]["CSF"] == {"dice": 0.75, "hd": math.inf} and saved["mean_dice"] == 0.8125
    assert saved["reference_sha256"] == {"IBSR_06": "a" * 64, "IBSR_07": "b" * 64}


def test_a_summary_of_metric_set_v1_reads_with_its_defaults_and_is_outdated(ws, tmp_path):
    write_summary(ws, summary(tmp_path))
    saved = json.loads(summary_path(ws, "perfect").read_text())
    for key in ("metrics", "metrics_version", "nsd_tolerance_mm", "reference_sha256"):
        del saved[key]
    summary_path(ws, "perfect").write_text(json.dumps(saved))
    old = read_summary(ws, "perfect")
    assert (old.metrics, old.metrics_version, old.nsd_tolerance_mm, old.reference_sha256) == (
        ("dice", "hd", "hd95", "avd"), 1, None, None)
    assert old.outdated_metrics() == ("scored with metric set v1 (dice, hd, hd95, avd), not v3 (adds nsd, volumes "
                                      "in mL)")
    assert old.changed_references({"IBSR_06": "a" * 64}) == ("the checksums of the reference labels it was scored "
                                                             "against are not recorded")


def test_outdated_metrics_and_changed_references_name_what_differs(tmp_path):
    current = summary(tmp_path)
    assert current.outdated_metrics(nsd_tolerance=1.0) is None
    assert current.outdated_metrics(nsd_tolerance=2.0) == "NSD scored at 1 mm, not 2 mm"
    assert summary(tmp_path, nsd_tolerance_mm=None).outdated_metrics() == "NSD tolerance not recorded, not 1 mm"
    assert current.changed_references({"IBSR_06": "a" * 64, "IBSR_07": "b" * 64}) is None
    assert current.changed_references({"IBSR_06": "c" * 64, "IBSR_08": "d" * 64}) == (
        "the reference labels of IBSR_06, IBSR_07, IBSR_08 changed since it was scored")


def test_a_summary_is_current_only_for_its_predictions_dataset_and_files(ws, tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    for case in ("IBSR_06", "IBSR_07"):
        (folder / f"{case}.nii.gz").write_bytes(b"x")
        os.utime(folder / f"{case}.nii.gz", (900, 900))
    write_summary(ws, summary(folder.resolve()))
    assert is_current(ws, folder, "perfect", fingerprint=FINGERPRINT, nsd_tolerance=1.0)
    assert not is_current(ws, folder, "perfect", fingerprint="0" * 64, nsd_tolerance=1.0)
    assert not is_current(ws, folder, "perfect", fingerprint=FINGERPRINT, nsd_tolerance=2.0)
    os.utime(folder / "IBSR_07.nii.gz", (1001, 1001))  # predicted again after it was scored
    assert not is_current(ws, folder, "perfect", fingerprint=FINGERPRINT, nsd_tolerance=1.0)


def test_a_missing_summary_or_table_is_none(ws, tmp_path):
    assert read_summary(ws, "perfect") is None and recorded_summary(ws, "perfect") is None
    write_summary(ws, summary(tmp_path))
    (ws.evaluation / "perfect.csv").unlink()
    assert recorded_summary(ws, "perfect") is None and read_summary(ws, "perfect") is not None


@pytest.mark.parametrize(("text", "wrong"), [
    ('{"model": "perfect", "predi', r"is not valid JSON \(cut short or edited by hand: .*\)"),
    ("[1, 2]", r"is not an evaluation summary \(not a JSON object\)"),
    ('{"model": "perfect"}', r"is not an evaluation summary \(KeyError: 'predictions'\)"),
])
def test_a_cut_short_or_malformed_summary_is_refused_in_one_sentence(ws, text, wrong):
    summary_path(ws, "perfect").write_text(text)
    with pytest.raises(InputError, match=rf"^{summary_path(ws, 'perfect')} {wrong}; {REWRITE}"):
        read_summary(ws, "perfect")
    assert recorded_summary(ws, "perfect") is None  # counts as no evaluation: redone, never current


def test_a_summary_with_a_value_of_another_type_is_refused(ws, tmp_path):
    write_summary(ws, summary(tmp_path))
    saved = json.loads(summary_path(ws, "perfect").read_text())
    summary_path(ws, "perfect").write_text(json.dumps({**saved, "mean_dice": "high"}))
    with pytest.raises(InputError, match=r"is not an evaluation summary \(TypeError: 'high' is not a number\)"):
        read_summary(ws, "perfect")

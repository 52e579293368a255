"""nnunet/ensemble.py's record of the best-configuration search, best_configuration.json: written and read back
exactly with its keys; a cut-short or malformed record refused in one sentence; the search's outputs archived when
the record names another dataset or cannot be read, left in place when it names this one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.ensemble import (
    BestConfiguration,
    archive_stale_search,
    best_configuration_file,
    read_best_configuration,
    write_best_configuration,
)

FINGERPRINT, OLD = "f" * 64, "0" * 64
REWRITE = r"run `ibsr-nnunet ensemble` again to rewrite it\.$"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    return ws


def search(ws: Workspace, fingerprint: str = FINGERPRINT) -> BestConfiguration:
    return BestConfiguration(
        winner="nnunet_ensemble", reason="nnunet_ensemble has the highest cross-validation foreground-mean Dice",
        crossval_dice={"nnunet_2d": 0.8125, "nnunet_3d_fullres": 0.75, "nnunet_ensemble": 0.875},
        crossval_dice_post_pp=0.890625, trainer="IbsrTrainer", configurations=("2d", "3d_fullres"), folds=(0, 1, 4),
        warnings=("only folds 0, 1, 4 of 5 are finished",),
        predictions={"nnunet_2d": ws.predictions / "nnunet_2d", "nnunet_ensemble": ws.predictions / "nnunet_ensemble"},
        dataset_fingerprint=fingerprint)


def test_a_written_record_reads_back_equal_with_its_keys(ws):
    written = search(ws)
    assert write_best_configuration(ws, written) == ws.root / "best_configuration.json"
    assert read_best_configuration(ws) == written
    assert json.loads(best_configuration_file(ws).read_text()) == {
        "winner": "nnunet_ensemble", "reason": "nnunet_ensemble has the highest cross-validation foreground-mean Dice",
        "crossval_dice": {"nnunet_2d": 0.8125, "nnunet_3d_fullres": 0.75, "nnunet_ensemble": 0.875},
        "crossval_dice_post_pp": 0.890625, "trainer": "IbsrTrainer", "configurations": ["2d", "3d_fullres"],
        "models": [], "folds": [0, 1, 4], "warnings": ["only folds 0, 1, 4 of 5 are finished"],
        "predictions": {"nnunet_2d": str(ws.predictions / "nnunet_2d"),
                        "nnunet_ensemble": str(ws.predictions / "nnunet_ensemble")},
        "dataset_fingerprint": FINGERPRINT}


def test_no_record_reads_as_none(ws):
    assert read_best_configuration(ws) is None


@pytest.mark.parametrize(("change", "wrong"), [
    (lambda text: text[:40], r"is not valid JSON \(cut short or edited by hand: .*\)"),
    (lambda text: "[]", r"is not a best-configuration record \(not a JSON object\)"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "winner"}),
     r"is not a best-configuration record \(KeyError: 'winner'\)"),
    (lambda text: json.dumps({**json.loads(text), "folds": ["0"]}),
     r"is not a best-configuration record \(TypeError: folds must be whole numbers\)"),
])
def test_a_cut_short_or_malformed_record_is_refused_in_one_sentence(ws, change, wrong):
    path = write_best_configuration(ws, search(ws))
    path.write_text(change(path.read_text()))
    with pytest.raises(InputError, match=rf"^{path} {wrong}; {REWRITE}"):
        read_best_configuration(ws)


def outputs(ws: Workspace) -> list[Path]:
    """The search's outputs beside the record, as nnU-Net's search leaves them."""
    made = [ws.results_dataset / "ensembles" / "ensemble___x___0" / "summary.json",
            ws.results_dataset / "inference_information.json"]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return made


@pytest.mark.parametrize(("record", "made_on"), [
    (lambda ws: write_best_configuration(ws, search(ws, OLD)), "000000000000"),
    (lambda ws: best_configuration_file(ws).write_text('{"winner": "nnu'), "an unknown dataset"),
])
def test_a_search_of_another_dataset_or_unreadable_is_archived(ws, record, made_on):
    record(ws)
    made, said = outputs(ws), []
    archive_stale_search(ws, FINGERPRINT, [], say=said.append)
    assert len(said) == 1 and said[0].startswith(f"archived the best-configuration search (made from dataset {made_on}")
    [archive] = list((ws.root / "stale").iterdir())
    assert (archive / "best_configuration.json").is_file() and not best_configuration_file(ws).exists()
    assert all((archive / path.relative_to(ws.root)).is_file() and not path.exists() for path in made)


def test_a_search_of_this_dataset_stays_in_place(ws):
    write_best_configuration(ws, search(ws))
    made, said = outputs(ws), []
    archive_stale_search(ws, FINGERPRINT, [], say=said.append)
    assert said == [] and read_best_configuration(ws) == search(ws) and all(path.is_file() for path in made)

"""Node-local staging of the preprocessed data (`train --stage-data`): copied once, reused while identical, raced
safely, and read by the run, whose results stay in the workspace."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.nnunet import staging


def test_stage_copies_what_training_reads_then_reuses_an_identical_copy(planned_ws, tmp_path):
    first = staging.stage(planned_ws, "nnUNetPlans_2d", local_scratch=tmp_path)
    dataset = first.root / planned_ws.dataset_name
    source = planned_ws.preprocessed_dataset
    expected = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()
                      and p.relative_to(source).parts[0] not in ("nnUNetPlans_3d_fullres",))
    assert sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file()) == expected
    assert first.copied and first.files == len(expected)
    assert first.bytes == sum((source / name).stat().st_size for name in expected)
    assert (dataset / "nnUNetPlans.json").read_bytes() == (source / "nnUNetPlans.json").read_bytes()

    again = staging.stage(planned_ws, "nnUNetPlans_2d", local_scratch=tmp_path)
    assert not again.copied and again.root == first.root

    (dataset / "dataset.json").write_text("{}")  # the copy was damaged: same size no more, copied afresh
    fresh = staging.stage(planned_ws, "nnUNetPlans_2d", local_scratch=tmp_path)
    assert fresh.copied and (dataset / "dataset.json").read_bytes() == (source / "dataset.json").read_bytes()
    assert [p.name for p in (tmp_path / "ibsr-nnunet-staged").iterdir()] == [first.root.parent.name]


def test_two_runs_staging_at_once_end_with_one_copy_and_no_leftovers(planned_ws, tmp_path):
    results, errors = [], []

    def stage_once():
        try:
            results.append(staging.stage(planned_ws, "nnUNetPlans_3d_fullres", local_scratch=tmp_path))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=stage_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len({r.root for r in results}) == 1
    assert [p.name for p in (tmp_path / "ibsr-nnunet-staged").iterdir()] == [results[0].root.parent.name]


def test_the_loser_of_the_rename_keeps_the_winners_copy(planned_ws, tmp_path):
    winner = staging.stage(planned_ws, "nnUNetPlans_2d", local_scratch=tmp_path)
    files = staging.source_files(planned_ws, "nnUNetPlans_2d")
    expected = staging.manifest(planned_ws.preprocessed_dataset, files)
    loser = tmp_path / "loser"
    (loser / "nnUNet_preprocessed").mkdir(parents=True)
    (loser / staging.MANIFEST).write_text(json.dumps(expected))
    before = (winner.root.parent / staging.MANIFEST).stat().st_ino
    staging._publish(loser, winner.root.parent, expected)
    assert (winner.root.parent / staging.MANIFEST).stat().st_ino == before and loser.is_dir()


def test_the_scratch_folder_is_local_scratch_then_slurm_tmpdir_then_tmpdir(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_TMPDIR", "/slurm-tmp")
    monkeypatch.setenv("TMPDIR", "/tmpdir")
    assert staging.scratch_folder(tmp_path) == tmp_path
    assert staging.scratch_folder() == Path("/slurm-tmp")
    monkeypatch.delenv("SLURM_TMPDIR")
    assert staging.scratch_folder() == Path("/tmpdir")
    monkeypatch.delenv("TMPDIR")
    with pytest.raises(InputError, match="pass --local-scratch DIR"):
        staging.scratch_folder()

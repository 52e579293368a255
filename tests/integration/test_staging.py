"""Node-local staging of the preprocessed data (`train --stage-data`): copied once, reused while identical, raced
safely, and read by the run, whose results stay in the workspace."""

from __future__ import annotations

import json
import os

import pytest

from helpers import cli
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name


@pytest.mark.integration
def test_train_reads_the_staged_copy_and_writes_results_to_the_workspace(planned_copy, tmp_path):
    scratch = tmp_path / "node local"
    done = cli(planned_copy, "train", "--fold", "0", "--config", "2d", "--epochs", "1", "--iterations-per-epoch", "1",
               "--device", "cpu", "--stage-data", "--local-scratch", str(scratch))
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert "staged the preprocessed data (nnUNetPlans_2d) on node-local disk" in said and "copied" in said
    folder = fold_folder(planned_copy, "2d", 0, trainer=trainer_name(1, 1))
    debug = json.loads((folder / "debug.json").read_text())  # nnU-Net's record of the trainer's own folders
    staged = next((scratch / "ibsr-nnunet-staged").iterdir()) / "nnUNet_preprocessed" / planned_copy.dataset_name
    assert debug["preprocessed_dataset_folder"] == str(staged / "nnUNetPlans_2d")
    assert debug["preprocessed_dataset_folder_base"] == str(staged)
    assert (folder / "checkpoint_final.pth").is_file() and (folder / "validation" / "summary.json").is_file()
    assert not [p for p in scratch.rglob("*") if p.suffix in (".pth", ".npz") or p.name == "summary.json"]
    assert os.environ.get("nnUNet_preprocessed") != str(staged.parent)

"""Typed, checked settings on a workspace: names match over the whole string, extreme label values and cut-short
nnU-Net files get one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import invoke, said
from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.core.errors import InputError


def test_names_must_match_over_the_whole_string(converted_copy):
    result = invoke(converted_copy, "evaluate", "--predictions", converted_copy.raw_dataset / "labelsTs",
                    "--name", "evil\n")
    assert result.exit_code == 1 and "is not a usable model name" in said(result)
    assert not list(converted_copy.evaluation.glob("evil*"))
    with pytest.raises(InputError, match="partition"):
        sbatch.resources_from(partition="gpu\n")
    with pytest.raises(InputError, match="may hold only"):
        sbatch.render_final(sbatch.Path("/w"), ["python"], sbatch.Resources(), trainer="IbsrTrainer\n", device="cpu")


def test_extreme_label_values_are_refused_in_one_sentence(misa_copy, tmp_path):
    import nibabel as nib

    label = misa_copy / "Training_Set" / "IBSR_01" / "IBSR_01_seg.nii.gz"
    image = nib.load(str(label))
    data = np.asarray(image.dataobj).astype(np.int16)
    data[data == 3] = 30000
    data[data == 1] = -30000
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(label))
    result = invoke(tmp_path / "ws", "convert", misa_copy)
    assert result.exit_code == 1 and "IBSR_01_seg.nii.gz" in said(result) and "-30000" in said(result), result.output
    assert "Traceback" not in result.output


def test_cut_short_or_missing_nnunet_files_are_one_sentence(planned_copy):
    ws = planned_copy
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", "1", "--iterations-per-epoch", "1", "--device", "cpu"]
    splits = ws.preprocessed_dataset / "splits_final.json"
    kept = splits.read_text()
    splits.unlink()
    result = invoke(ws, *args)
    assert result.exit_code == 1 and f"{splits} does not exist" in said(result) and "ibsr-nnunet plan" in said(result)
    splits.write_text(kept)
    plans = ws.preprocessed_dataset / "nnUNetPlans.json"
    plans.write_text(plans.read_text()[:100])
    result = invoke(ws, *args)
    assert result.exit_code == 1 and f"{plans} is not valid JSON" in said(result) and "plan --force" in said(result)
    assert "Traceback" not in result.output
    manifest = json.loads(ws.manifest.read_text())
    ws.manifest.write_text(json.dumps(manifest)[:50])
    result = invoke(ws, "plan")
    assert result.exit_code == 1 and f"{ws.manifest} is not valid JSON" in said(result)

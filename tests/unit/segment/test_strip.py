"""segment/strip.py without deepbet's models: `--strip` refused in one sentence when deepbet is missing, before
anything is written; the warning for an unstripped scan names --strip."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from helpers import invoke
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.data.volumes import Volume
from ibsr_nnunet.segment import Reference, scan_warnings
from ibsr_nnunet.segment.strip import require_deepbet


@pytest.fixture
def no_deepbet(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepbet", None)  # `import deepbet` raises ImportError


def test_without_deepbet_strip_is_refused_naming_the_pip_command(no_deepbet):
    with pytest.raises(InputError, match=r'^--strip needs the optional package deepbet, which is not installed; '
                                         r'install it with `pip install "ibsr-nnunet\[strip\]"`, or leave out'):
        require_deepbet()


def test_segment_strip_without_deepbet_exits_1_and_creates_no_output(no_deepbet, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"not read: the refusal comes first")
    out = tmp_path / "out"
    result = invoke(tmp_path / "ws", "segment", str(scan), "--output", str(out), "--model", "unet2d__dice_ce",
                    "--strip")
    assert result.exit_code == 1
    assert 'pip install "ibsr-nnunet[strip]"' in " ".join(result.output.split())
    assert not out.exists() and "Traceback" not in result.output


@pytest.mark.parametrize("zeros, warned", [(0.05, True), (0.19, True), (0.21, False), (0.8, False)])
def test_a_scan_with_few_zero_voxels_is_warned_to_pass_strip(zeros, warned):
    array = np.full((20, 10, 10), 50.0, np.float32)
    array.reshape(-1)[: int(round(zeros * array.size))] = 0
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header.set_zooms((1.0, 1.5, 1.0))
    found = scan_warnings(Volume(array, header), Reference(None, (1.0, 1.5, 1.0)))
    stripped = [w for w in found if "skull-stripped" in w]
    assert stripped == ([f"does not look skull-stripped: only {zeros:.0%} of voxels are 0 (pass --strip to strip it "
                         f"first)"] if warned else [])

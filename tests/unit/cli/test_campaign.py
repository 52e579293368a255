"""The campaign commands' own checks, in-process: each name given to submit is checked against its registry before
anything is read or submitted."""

from __future__ import annotations

import pytest

from helpers import invoke, said


@pytest.mark.parametrize("args, valid", [
    (["submit", "--baselines", "foo__bar", "--dry-run"], "MODEL__LOSS with MODEL in unet2d"),
    (["submit", "--baselines", "unet2d__hinge", "--dry-run"], "LOSS in ce, dice, dice_ce"),
    (["submit", "--folds", "0,5", "--dry-run"], "'5' is not one of 0, 1, 2, 3, 4"),
    (["submit", "--configs", "2d,4d", "--dry-run"], "'4d' is not one of 2d, 3d_fullres, 3d_lowres"),
])
def test_submit_checks_each_name_against_its_registry(tmp_path, args, valid):
    result = invoke(tmp_path / "ws", *args)
    assert result.exit_code == 2 and valid in said(result), result.output

"""Real nnunetv2 on a small phantom, through the real CLI in subprocesses (nnU-Net needs a __main__ guard).

Training tests are integration tests; the refusal without plans runs in-process in the fast loop."""

import os

from helpers import cli, invoke, said


def test_compile_is_set_for_the_run_only(monkeypatch):
    from ibsr_nnunet.nnunet.train import COMPILE_DEFAULT, _compile_setting

    monkeypatch.delenv("nnUNet_compile", raising=False)
    with _compile_setting(False, cuda=True):
        assert os.environ["nnUNet_compile"] == "false"
    assert "nnUNet_compile" not in os.environ
    with _compile_setting(None, cuda=True):
        assert os.environ["nnUNet_compile"] == ("true" if COMPILE_DEFAULT else "false")
    with _compile_setting(True, cuda=False):  # never on CPU: nnU-Net's validation predictor would compile there
        assert os.environ["nnUNet_compile"] == "false"
    monkeypatch.setenv("nnUNet_compile", "0")  # the user's own choice stands when no option is given
    with _compile_setting(None, cuda=True):
        assert os.environ["nnUNet_compile"] == "false"
    with _compile_setting(True, cuda=True):
        assert os.environ["nnUNet_compile"] == "true"
    assert os.environ["nnUNet_compile"] == "0"


def test_train_refuses_missing_plans(converted_copy):
    result = invoke(converted_copy, "train", "--fold", "0", "--config", "2d", "--device", "cpu")
    assert result.exit_code == 1
    assert "run `ibsr-nnunet plan` first" in said(result)


def test_train_refuses_missing_plans_in_a_process(converted_copy):
    """The same refusal from the real entry point, on stderr (kept from before the in-process version above)."""
    result = cli(converted_copy, "train", "--fold", "0", "--config", "2d", "--device", "cpu")
    assert result.returncode == 1
    assert "run `ibsr-nnunet plan` first" in result.stderr

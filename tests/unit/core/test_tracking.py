"""core/tracking.py: the --track options checked, the W&B run id derived from the run folder and its dataset, and
tracking refused in one sentence where the wandb package is missing."""

import re
import sys

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.tracking import Tracking, tracked_run_id


@pytest.mark.parametrize("kwargs, message", [
    ({"tool": "mlflow"}, "--track mlflow is unknown; use wandb"),
    ({"tool": "wandb", "mode": "disabled"}, "--track-mode disabled is unknown; use offline or online"),
    ({"tool": "wandb", "project": "my project"}, "--track-project 'my project' is refused"),
    ({"tool": "wandb", "project": ""}, "--track-project '' is refused"),
])
def test_bad_tracking_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        Tracking(**kwargs)


def test_tracking_is_off_unless_asked_for_and_passes_on_as_options():
    assert not Tracking().enabled and Tracking().options() == [] and Tracking().record("x") is None
    tracking = Tracking("wandb", "online", "brains")
    assert tracking.options() == ["--track", "wandb", "--track-mode", "online", "--track-project", "brains"]
    assert tracking.record("abc") == {"tool": "wandb", "mode": "online", "project": "brains", "run_id": "abc"}


def test_the_run_id_is_one_per_run_folder_and_dataset(tmp_path):
    fold = tmp_path / "nnUNet_results" / "Dataset501_IBSR18" / "IbsrTrainer_2ep_2it__nnUNetPlans__2d" / "fold_0"
    first = tracked_run_id(fold, "f" * 64)
    assert first == tracked_run_id(tmp_path / "nnUNet_results" / "Dataset501_IBSR18" / "." /
                                   "IbsrTrainer_2ep_2it__nnUNetPlans__2d" / "fold_0", "f" * 64)  # a requeue
    assert first.startswith("IbsrTrainer_2ep_2it__nnUNetPlans__2d-fold_0-")
    others = {tracked_run_id(fold.with_name("fold_1"), "f" * 64), tracked_run_id(fold, "e" * 64),
              tracked_run_id(tmp_path / "elsewhere" / fold.parent.name / "fold_0", "f" * 64)}
    assert first not in others and len(others) == 3
    long = tracked_run_id(tmp_path / ("x" * 200) / "baselines" / "unet2d__dice_ce", "f" * 64)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", long) and long.startswith("baselines-unet2d__dice_ce-")


def test_tracking_without_the_wandb_package_is_refused_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where it is not installed
    with pytest.raises(InputError) as refused:
        Tracking("wandb").require()
    assert str(refused.value) == ('--track wandb needs the wandb package, which is not installed here: run '
                                  '`pip install "ibsr-nnunet[tracking]"` (or leave --track out).')
    Tracking().require()  # untracked: nothing needed

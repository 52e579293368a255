"""The baselines' names, without torch: what the CLI lists and validates (`--model`, `--loss`, `--baselines`)."""

from __future__ import annotations

from typing import Optional

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.names import name_problem, quoted
from ibsr_nnunet.core.vocabulary import BASELINE_SEPARATOR

MODELS = ("unet2d", "resunet2d", "denseunet2d", "unet3d")
LOSSES = ("ce", "dice", "dice_ce", "focal", "tversky", "focal_tversky")
OPTIMIZERS = ("adam", "sgd", "adadelta")
SCHEDULES = ("plateau", "cosine")
BASELINE_FORM = f"MODEL__LOSS with MODEL in {', '.join(MODELS)} and LOSS in {', '.join(LOSSES)}"


def baseline_problem(name: str) -> Optional[str]:
    """Why `name` is not a baseline's name MODEL__LOSS (a phrase that follows the name), or None when it is."""
    problem = name_problem(name)
    if problem:
        return problem
    model, loss = split_baseline_name(name)
    return None if model in MODELS and loss in LOSSES else f"is not {BASELINE_FORM}"


def check_baseline_name(name: str, option: str) -> str:
    """`name` when it is a baseline's name; otherwise an InputError naming `option`."""
    problem = baseline_problem(name)
    if problem:
        raise InputError(f"{option} {quoted(name)} {problem}; write it as e.g. unet2d__dice_ce.")
    return name


def baseline_name(model: str, loss: str) -> str:
    """The baseline's name MODEL__LOSS (its run folder and prediction set)."""
    return f"{model}{BASELINE_SEPARATOR}{loss}"


def split_baseline_name(name: str) -> tuple[str, str]:
    """(model, loss) of a name MODEL__LOSS; loss is "" when the name has no separator."""
    model, _, loss = name.partition(BASELINE_SEPARATOR)
    return model, loss

"""The baselines' names, without torch: what the CLI lists and validates (`--model`, `--loss`, `--view`,
`--baselines`). A run's name is MODEL__LOSS, or MODEL_VIEW__LOSS for a 2D model trained on a view named by hand
(unet2d_axial__dice_ce); the default view, across the thickest axis, keeps the plain name."""

from __future__ import annotations

from typing import Optional

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.names import name_problem, quoted
from ibsr_nnunet.core.vocabulary import BASELINE_SEPARATOR

MODELS = ("unet2d", "resunet2d", "denseunet2d", "unet3d")
MODELS_2D = ("unet2d", "resunet2d", "denseunet2d")
LOSSES = ("ce", "dice", "dice_ce", "focal", "tversky", "focal_tversky")
OPTIMIZERS = ("adam", "sgd", "adadelta")
SCHEDULES = ("plateau", "cosine")
THICKEST = "thickest"  # the default view: slices across the axis with the largest spacing (IBSR: coronal)
VIEWS = ("coronal", "axial", "sagittal")  # slices across the A-P, S-I or L-R axis of the training orientation
VIEW_CHOICES = (THICKEST, *VIEWS)
VOTES = ("mean", "majority")  # how an ensemble of baselines fuses its members (baselines/ensemble.py)
BASELINE_FORM = (f"MODEL__LOSS with MODEL in {', '.join(MODELS)} and LOSS in {', '.join(LOSSES)}, or "
                 f"MODEL_VIEW__LOSS for a 2D model with VIEW in {', '.join(VIEWS)}")


def baseline_problem(name: str) -> Optional[str]:
    """Why `name` is not a baseline's name (a phrase that follows the name), or None when it is."""
    problem = name_problem(name)
    if problem:
        return problem
    network, loss = split_baseline_name(name)
    model, view = split_view(network)
    return None if model in MODELS and loss in LOSSES and (view == THICKEST or model in MODELS_2D) \
        else f"is not {BASELINE_FORM}"


def check_baseline_name(name: str, option: str) -> str:
    """`name` when it is a baseline's name; otherwise an InputError naming `option`."""
    problem = baseline_problem(name)
    if problem:
        raise InputError(f"{option} {quoted(name)} {problem}; write it as e.g. unet2d__dice_ce or "
                         f"unet2d_axial__dice_ce.")
    return name


def check_view(model: str, view: str) -> str:
    """`view` when `model` can be trained on it (3D models see the volume whole: only the default)."""
    if view not in VIEW_CHOICES:
        raise InputError(f"--view {view!r} is not one of {', '.join(VIEW_CHOICES)}.")
    if view != THICKEST and model not in MODELS_2D:
        raise InputError(f"--view {view} is for the 2D models ({', '.join(MODELS_2D)}); {model} sees the whole "
                         f"volume, so leave --view out.")
    return view


def baseline_name(model: str, loss: str, view: str = THICKEST) -> str:
    """The baseline's name (its run folder and prediction set): MODEL__LOSS, or MODEL_VIEW__LOSS."""
    network = model if view == THICKEST else f"{model}_{view}"
    return f"{network}{BASELINE_SEPARATOR}{loss}"


def split_baseline_name(name: str) -> tuple[str, str]:
    """(network, loss) of a name NETWORK__LOSS, the network with its view if any; loss is "" without a separator."""
    network, _, loss = name.partition(BASELINE_SEPARATOR)
    return network, loss


def split_view(network: str) -> tuple[str, str]:
    """(model, view) of MODEL or MODEL_VIEW; the view is THICKEST when the name carries none."""
    for view in VIEWS:
        if network.endswith(f"_{view}"):
            return network.removesuffix(f"_{view}"), view
    return network, THICKEST


def parse_baseline_name(name: str) -> tuple[str, str, str]:
    """(model, view, loss) of a baseline's name."""
    network, loss = split_baseline_name(name)
    model, view = split_view(network)
    return model, view, loss


def train_options_of(name: str) -> str:
    """The `baseline train|predict` options that name this run: --model M [--view V] --loss L."""
    model, view, loss = parse_baseline_name(name)
    return f"--model {model}" + (f" --view {view}" if view != THICKEST else "") + f" --loss {loss}"

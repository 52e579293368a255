"""Model names: the one pattern and length limit every name a user gives a model must meet (`segment --model`,
`evaluate --name`, `baseline predict`, `submit --baselines`), so a name is one file name inside the workspace."""

from __future__ import annotations

import re
from typing import Optional

from .errors import InputError

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # no '/', cannot be '.' or '..', never absolute
MAX_NAME_LENGTH = 100  # <name>.csv, <name>.json and the hidden lock file stay well inside a 255-byte file name
SHOWN = 40  # characters of a refused name quoted back


def name_problem(name: str) -> Optional[str]:
    """Why `name` cannot name a model (a phrase that follows the name), or None when it can."""
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long, more than the {MAX_NAME_LENGTH} a model name may have"
    if not MODEL_NAME.fullmatch(name):
        return ("is not a usable model name: use letters, digits, '_', '-' or '.', starting with a letter or digit "
                "(no '/')")
    return None


def quoted(name: str) -> str:
    """`name` in quotes, cut short when it is long."""
    return repr(name if len(name) <= SHOWN else f"{name[:SHOWN]}...")


def check_model_name(name: str, option: str, example: str = "nnunet_ensemble or unet2d__dice_ce") -> str:
    """`name` when it can name a model; otherwise an InputError naming `option`."""
    problem = name_problem(name)
    if problem:
        raise InputError(f"{option} {quoted(name)} {problem}; pass a model name such as {example}.")
    return name

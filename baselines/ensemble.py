"""An ensemble of baselines: its name, its definition <workspace>/baselines/<name>/ensemble.json (the members and
how they vote) and the fusion of the members' class probabilities, by mean probability or by majority vote."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ibsr_nnunet.core.atomic import write_json
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.jsonfile import read_json_object
from ibsr_nnunet.core.names import name_problem, quoted

from .registry import VOTES, check_baseline_name

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_NAME = re.compile(r"baseline_ensemble(_[A-Za-z0-9_.-]+)?")
DEFAULT_NAMES = {"mean": "baseline_ensemble", "majority": "baseline_ensemble_vote"}
ENSEMBLE_FORM = "baseline_ensemble or baseline_ensemble_SUFFIX (e.g. baseline_ensemble_views)"
FORMAT = 1


def ensemble_problem(name: str) -> Optional[str]:
    """Why `name` cannot name an ensemble of baselines (a phrase following the name), or None when it can."""
    return name_problem(name) or (None if ENSEMBLE_NAME.fullmatch(name) else f"is not {ENSEMBLE_FORM}")


@dataclass(frozen=True)
class Definition:
    """The members (baseline names, in the order given) and how they vote: "mean" (the argmax of the mean
    probability) or "majority" (each member's argmax is one vote)."""

    members: tuple[str, ...]
    vote: str = "mean"

    def __post_init__(self):
        if self.vote not in VOTES:
            raise InputError(f"--vote {self.vote!r} is not one of {', '.join(VOTES)}.")
        for member in self.members:
            check_baseline_name(member, "--members")
        if len(self.members) < 2:
            raise InputError(f"--members names {len(self.members)} baseline; an ensemble needs at least 2, e.g. "
                             f"--members unet2d__dice_ce,unet2d_axial__dice_ce.")
        repeated = sorted({m for m in self.members if self.members.count(m) > 1})
        if repeated:
            raise InputError(f"--members names {', '.join(repeated)} more than once; name each baseline once.")


def definition_path(folder: Path) -> Path:
    return Path(folder) / ENSEMBLE_FILE


def write_definition(folder: Path, definition: Definition) -> None:
    write_json(definition_path(folder), {"format": FORMAT, "members": list(definition.members),
                                         "vote": definition.vote})


def read_definition(folder: Path) -> Optional[Definition]:
    """The folder's definition, None without one; InputError naming the file when it is not one this tool wrote."""
    path = definition_path(folder)
    fix = f"define it again with `ibsr-nnunet baseline ensemble --name {Path(folder).name} --members ...`"
    saved = read_json_object(path, fix, "an ensemble definition", missing_ok=True)
    if saved is None:
        return None
    members, vote = saved.get("members"), saved.get("vote")
    if saved.get("format") != FORMAT or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise InputError(f"{path} is not an ensemble definition of format {FORMAT} with a list of members; {fix}.")
    try:
        return Definition(tuple(members), str(vote))
    except InputError as err:
        raise InputError(f"{path} holds a definition this tool refuses ({err}); {fix}.") from err


def fuse(probabilities: Iterable[np.ndarray], vote: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 labels, mean probabilities) from the members' class probabilities (each C × grid), taken one at a
    time. "mean": the class of highest mean probability (the lower class on an exact tie, as argmax). "majority": the
    class most members' argmax gives; a tie between classes goes to the one of them with the highest mean
    probability."""
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    total: Optional[np.ndarray] = None
    counts: Optional[np.ndarray] = None
    members = 0
    for probs in probabilities:
        probs = np.asarray(probs, np.float32)
        if total is None:
            total, counts = probs.copy(), np.zeros(probs.shape, np.int16)
        elif probs.shape != total.shape:
            raise ValueError(f"member {members} gave probabilities of shape {probs.shape}, not {total.shape}")
        else:
            total += probs
        winner = probs.argmax(0)
        for code in range(len(probs)):
            counts[code] += winner == code
        members += 1
    if total is None:
        raise ValueError("fuse needs the probabilities of at least one member")
    mean = total / members
    if vote == "mean":
        return mean.argmax(0).astype(np.uint8), mean
    top = counts == counts.max(0, keepdims=True)
    return np.where(top, mean, -1.0).argmax(0).astype(np.uint8), mean


def describe(definition: Definition) -> str:
    """e.g. "mean probability of unet2d__dice_ce, unet3d__dice_ce"."""
    how = "mean probability" if definition.vote == "mean" else "majority vote"
    return f"{how} of {', '.join(definition.members)}"


def check_ensemble_name(name: str, option: str = "--name") -> str:
    """`name` when it can name an ensemble of baselines; otherwise an InputError naming `option`."""
    problem = ensemble_problem(name)
    if problem:
        raise InputError(f"{option} {quoted(name)} {problem}.")
    return name

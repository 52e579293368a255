"""Which model `segment` uses: the one named, or the leaderboard's best trained here, with its held-out scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from ..core.errors import InputError
from ..core.manifest import Manifest, read_manifest
from ..core.provenance import recorded_weights, weights_changed
from ..core.workspace import Workspace
from ..models import TrainedModel, checked_name, load_model


@dataclass(frozen=True)
class Chosen:
    """The model to segment with, and its leaderboard row (held-out Dice etc.), None when not on the leaderboard
    or scored with other weights than it holds now."""

    model: TrainedModel
    scores: Optional[dict]

    @property
    def name(self) -> str:
        return self.model.name


def checked_model_name(name: str) -> str:
    """`name` when it can name a model of a workspace; an InputError otherwise."""
    return checked_name(name, "--model")


def choose_model(ws: Workspace, name: Optional[str], manifest: Optional[Manifest] = None) -> Chosen:
    """`name`, or the leaderboard's best model, with its held-out scores (none when they were made with other weights
    than it holds now); refused when it was made from another dataset than the workspace's, or when its training (a
    baseline run, an nnU-Net fold) has not finished. `manifest`: the workspace's, when the command has read it."""
    manifest = read_manifest(ws) if manifest is None else manifest
    if name is not None:
        checked_model_name(name)
    board = pd.read_csv(ws.leaderboard) if ws.leaderboard.is_file() else None
    if board is not None and "dataset_fingerprint" in board and not board.empty:
        if set(board["dataset_fingerprint"].astype(str)) != {manifest.fingerprint}:
            board = None  # scores of another dataset say nothing about these models
    if name is None and board is None and ws.leaderboard.is_file():
        raise InputError(f"{ws.leaderboard} ranks models of another dataset; run `ibsr-nnunet leaderboard` again, "
                         f"or pass --model.")
    best = name is None  # the leaderboard's best
    if best:
        if board is None or board.empty:
            raise InputError(f"no leaderboard at {ws.leaderboard} to pick the best model from; "
                             "run `ibsr-nnunet leaderboard`, or pass --model "
                             "(e.g. nnunet_ensemble or unet2d__dice_ce).")
        name = _best_trained(ws, board, manifest)
    scores = None
    predicted = recorded_weights(ws.predictions / name)
    if predicted and (changed := weights_changed(ws, predicted)):
        if best:
            raise InputError(f"the leaderboard's best model {name} was scored with other weights than it holds now "
                             f"({changed}); predict it again and run `ibsr-nnunet leaderboard`, or pass --model.")
        board = None  # its scores were made with other weights than the model holds now
    if board is not None and name in set(board["model"]):
        scores = board.set_index("model").loc[name].to_dict()
    model = load_model(ws, name, manifest)
    if why := model.refusal(then="segment"):
        raise InputError(why)
    return Chosen(model, scores)


def _best_trained(ws: Workspace, board: pd.DataFrame, manifest: Manifest) -> str:
    """The best-ranked leaderboard model that is a trained model of this workspace (not an `evaluate --name` entry
    of outside predictions)."""
    ranked = [str(model) for model in board.sort_values("rank")["model"]]
    for name in ranked:
        if (model := load_model(ws, name, manifest)) is not None and model.trained():
            return name
    raise InputError(f"none of the models on {ws.leaderboard} ({', '.join(ranked)}) is trained in this workspace; "
                     f"pass --model, or train one (`ibsr-nnunet ensemble`, `ibsr-nnunet baseline train`).")

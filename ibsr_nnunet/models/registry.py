"""The model kinds: each registers its class here, and every command finds a model's kind by asking each kind
whether the name is one of its own."""

from __future__ import annotations

import difflib

from ..core.errors import InputError
from ..core.manifest import Manifest
from ..core.names import check_model_name, quoted
from ..core.workspace import Workspace
from .protocol import TrainedModel

KINDS: list[type[TrainedModel]] = []  # in registration order


def register(kind: type[TrainedModel]) -> type[TrainedModel]:
    """Make `kind` a model kind of every command (a class decorator)."""
    if kind not in KINDS:
        KINDS.append(kind)
    return kind


def kind_of(name: str) -> type[TrainedModel] | None:
    """The kind whose name `name` is, or None."""
    return next((kind for kind in KINDS if kind.claims(name)), None)


def known(name: str) -> bool:
    """Whether `name` names a model of some kind (trained or not)."""
    return kind_of(name) is not None


def checked_name(name: str, option: str = "--model") -> str:
    """`name` when it names a model of some kind; else an InputError in the words of the kind it looks most like."""
    check_model_name(name, option)
    if known(name):
        return name
    if not KINDS:
        raise InputError(f"{option} {quoted(name)} names no model: no model kind is registered.")

    def likeness(kind: type[TrainedModel]) -> float:
        return max(difflib.SequenceMatcher(None, name, example).ratio() for example in kind.examples())

    nearest = max(KINDS, key=likeness)
    raise InputError(f"{option} {quoted(name)} {nearest.refusal_of_name(name)}.")


def load_model(ws: Workspace, name: str, manifest: Manifest | None = None) -> TrainedModel | None:
    """The model `name` of the workspace (not checked for readiness: see TrainedModel.refusal), or None when no
    kind claims the name (an `evaluate --name` entry of predictions made elsewhere). `manifest`: the workspace's,
    when the command has read it already."""
    kind = kind_of(name)
    return kind(ws, name, given_manifest=manifest) if kind is not None else None


def trained_models(ws: Workspace) -> list[TrainedModel]:
    """Every model with trained weights in the workspace, kind by kind."""
    return [kind(ws, name) for kind in KINDS for name in kind.trained_names(ws)]

"""Ensembles of baselines (`baseline ensemble`): a model whose members are finished baseline runs of the workspace,
fused on each case's grid by mean probability or majority vote; its definition lives in
<workspace>/baselines/<name>/, its prediction set in <workspace>/predictions/<name>/."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import pandas as pd

from baselines.ensemble import (
    DEFAULT_NAMES,
    ENSEMBLE_FORM,
    Definition,
    check_ensemble_name,
    definition_path,
    describe,
    ensemble_problem,
    fuse,
    read_definition,
    write_definition,
)

from ..core.atomic import swap_in
from ..core.errors import InputError
from ..core.locks import Lock, current_holder, lock_path
from ..core.manifest import read_manifest
from ..core.oriented import Prediction, confidence, predict_oriented
from ..core.provenance import PROVENANCE_FILE, archive_stale_outputs, staleness, weights_signature, write_provenance
from ..core.workspace import Workspace
from ..data.volumes import Volume, read_volume, write_volume
from .baseline import BaselineModel
from .protocol import PredictSettings, TrainedModel, Validation
from .registry import register


@register
@dataclass(frozen=True)
class BaselineEnsemble(TrainedModel):
    """baseline_ensemble[_SUFFIX]: the fusion of two or more baselines, e.g. unet2d on three views and unet3d."""

    kind = "baseline_ensemble"

    @classmethod
    def claims(cls, name: str) -> bool:
        return ensemble_problem(name) is None

    @classmethod
    def examples(cls) -> tuple[str, ...]:
        return (*DEFAULT_NAMES.values(), "baseline_ensemble_views")

    @classmethod
    def refusal_of_name(cls, name: str) -> str:
        return ensemble_problem(name) or f"is not {ENSEMBLE_FORM}"

    @classmethod
    def trained_names(cls, ws: Workspace) -> list[str]:
        if not ws.baselines.is_dir():
            return []
        return sorted(folder.name for folder in ws.baselines.iterdir()
                      if cls.claims(folder.name) and cls(ws, folder.name).trained())

    @property
    def folder(self) -> Path:
        return self.ws.baselines / self.name

    def definition(self) -> Optional[Definition]:
        """The members and vote, None when the ensemble was never defined (InputError when its file is broken)."""
        return read_definition(self.folder)

    def members(self) -> list[BaselineModel]:
        definition = self.definition()
        return [BaselineModel(self.ws, m, given_manifest=self.manifest) for m in definition.members] \
            if definition else []

    @property
    def remake(self) -> str:
        try:
            definition = self.definition()
        except InputError:
            definition = None
        members = ",".join(definition.members) if definition else "MEMBER,MEMBER"
        vote = definition.vote if definition else "mean"
        return f"ibsr-nnunet baseline ensemble --name {self.name} --members {members} --vote {vote}"

    @property
    def retrain(self) -> str:
        return f"retrain its stale members with `ibsr-nnunet baseline train ... --archive-stale`, then `{self.remake}`"

    def trained(self) -> bool:
        try:
            members = self.members()
        except InputError:
            return False
        return bool(members) and all(m.trained() for m in members)

    def weight_files(self) -> list[Path]:
        """The definition (other members or another vote are another model) and every member's best weights."""
        return [definition_path(self.folder), *(path for m in self.members() for path in m.weight_files())]

    def portable_files(self) -> list[Path]:
        own = [definition_path(self.folder), *(p for p in (self.folder / PROVENANCE_FILE,) if p.is_file())]
        return [*own, *(path for m in self.members() for path in m.portable_files())]

    def stale(self) -> Optional[str]:
        why = staleness(self.folder, self.manifest.fingerprint)
        if why:
            return why
        for member in self.members():
            if member_why := member.stale():
                return f"its member {member.name} is stale ({member_why})"
        return None

    def refusal(self, then: str = "segment") -> Optional[str]:
        try:
            definition = self.definition()
        except InputError as err:
            return str(err)
        if definition is None:
            return (f"model {self.name} is not defined in this workspace (no {definition_path(self.folder)}); define "
                    f"it with `ibsr-nnunet baseline ensemble --name {self.name} --members ...`, then {then}.")
        if why := staleness(self.folder, self.manifest.fingerprint):
            return f"model {self.name} is stale ({self.folder}: {why}); run `{self.remake}` again."
        for member in self.members():
            if why := member.refusal(then=then):
                return f"model {self.name} cannot be used: its member {why}"
        return None

    @property
    def axcodes(self) -> tuple[str, ...]:
        members = self.members()
        return members[0].axcodes if members else super().axcodes

    def predict(self, volumes: Iterable[tuple[str, Volume]], settings: PredictSettings) -> Iterator[Prediction]:
        """Each volume predicted by every member on its grid, then fused; the members loaded once."""
        from baselines.infer import Predictor

        definition = self.definition()
        predictors = [Predictor(m.folder, device=settings.device, overlap=1 - settings.step_size,
                                tta=bool(settings.tta), resample=settings.resample) for m in self.members()]
        for key, volume in volumes:
            started = time.perf_counter()
            try:
                labels, mean = fuse((p.probabilities(volume) for p in predictors), definition.vote)
            except Exception as err:
                yield Prediction(key, error=err, seconds=time.perf_counter() - started)
                continue
            sums = mean.sum(axis=tuple(range(1, mean.ndim)), dtype="float64") if settings.probabilities else None
            yield Prediction(key, labels, sums, time.perf_counter() - started,
                             confidence=confidence(mean, labels) if settings.probabilities else None)

    def validation(self) -> Validation:
        return Validation({"internal_val_dice": math.nan})

    def training_seconds(self) -> float:
        """The members' training, summed."""
        try:
            return float(sum(m.training_seconds() for m in self.members())) if self.members() else math.nan
        except InputError:
            return math.nan

    def training_curves(self) -> dict[str, pd.DataFrame]:
        return {}


def build_baseline_ensemble(ws: Workspace, definition: Definition, name: Optional[str] = None, *,
                            device: str = "auto", overlap: float = 0.5,
                            on_case: Optional[Callable[[str], None]] = None,
                            say: Callable[[str], None] = print) -> Path:
    """Define the ensemble `name` (default baseline_ensemble, or baseline_ensemble_vote for majority voting) of
    finished, current baseline runs of this workspace, and predict every held-out and test case with it into
    <workspace>/predictions/<name>/ (built aside and swapped in whole). The set records the dataset and the
    signature of the definition and of every member's weights, so a member retrained since makes it stale."""
    name = check_ensemble_name(name or DEFAULT_NAMES[definition.vote])
    manifest = read_manifest(ws)
    fingerprint = manifest.fingerprint
    model = BaselineEnsemble(ws, name, given_manifest=manifest)
    for member in definition.members:
        if why := BaselineModel(ws, member, given_manifest=manifest).refusal(then="ensemble it"):
            raise InputError(f"--members {member}: {why}")
    out = ws.predictions / name
    command = f"ibsr-nnunet baseline ensemble --name {name}"
    with Lock(lock_path(model.folder), f"ensemble {name}", command, say=say), \
            Lock(lock_path(out), f"prediction set {name}", command, say=say):
        if why := staleness(model.folder, fingerprint):
            archive_stale_outputs(ws, [model.folder, out], what=f"ensemble {name}", why=why, say=say)
        model.folder.mkdir(parents=True, exist_ok=True)
        write_definition(model.folder, definition)
        write_provenance(model.folder, fingerprint, model=name, members=list(definition.members),
                         vote=definition.vote)
        for member in definition.members:  # still nobody training them, now that the definition names them
            if (holder := current_holder(lock_path(ws.baselines / member))) is not None:
                raise InputError(f"--members {member} is being trained right now by {holder.describe()}: wait for "
                                 f"it to finish, then run `{model.remake}` again.")
        weights = weights_signature(ws, model.weight_files())  # before predicting: a change during it shows later
        say(f"{name}: {describe(definition)}")
        _predict_set(ws, model, out, device=device, overlap=overlap, on_case=on_case,
                     record=dict(model=name, members=list(definition.members), vote=definition.vote, weights=weights))
    return out


def _predict_set(ws: Workspace, model: BaselineEnsemble, out: Path, *, device: str, overlap: float,
                 on_case: Optional[Callable[[str], None]], record: dict) -> None:
    """Every held-out and test case fused on its own grid, through the one orientation path, built in a scratch
    folder beside `out` with its provenance `record`, and swapped in."""
    cases = [(case.id, partial(read_volume, case.image)) for role in ("heldout", "test")
             for case in ws.cases(role, model.manifest)]
    ws.predictions.mkdir(parents=True, exist_ok=True)
    scratch = ws.predictions / f".tmp-{out.name}-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir()
    try:
        settings = PredictSettings(device=device, step_size=1 - overlap)
        for carried in predict_oriented(cases, model.axcodes, partial(model.predict, settings=settings)):
            error = carried.error or (carried.prediction and carried.prediction.error)
            if error is not None:
                raise error
            write_volume(carried.original.with_array(carried.prediction.labels), scratch / f"{carried.key}.nii.gz")
            if on_case:
                on_case(carried.key)
        write_provenance(scratch, model.manifest.fingerprint, **record)
        swap_in(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""The `ensemble` step's nnU-Net side: which folds to search over, the record of each nnU-Net model, and the
best-configuration search's outputs (models/ensemble.py predicts the sets). The one module that writes and reads our
record of the search, `<workspace>/best_configuration.json`:

    winner                 the model with the highest cross-validation Dice, e.g. nnunet_ensemble
    reason                 why, in a sentence
    crossval_dice          model -> cross-validation foreground-mean Dice before postprocessing
    crossval_dice_post_pp  the winner's Dice after its postprocessing
    trainer                the trainer searched, e.g. IbsrTrainer
    configurations         the configurations searched, e.g. ["2d", "3d_fullres"]
    models                 the models searched, e.g. ["nnunet_2d", "nnunet_3d_fullres", "nnunet_resencm_2d"]
    folds                  the folds searched, e.g. [0, 1, 2, 3, 4]
    warnings               each warning of the fold selection, in words
    predictions            model -> its prediction folder
    dataset_fingerprint    the dataset it was made from

Read back for its dataset_fingerprint only: a search made from another dataset is moved to the archive."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..core.atomic import write_json
from ..core.errors import InputError
from ..core.jsonfile import read_json_object
from ..core.provenance import (
    KEY,
    archive_stale_outputs,
    dataset_fingerprint,
    short,
    staleness,
)
from ..core.vocabulary import CONFIGURATIONS, N_FOLDS
from ..core.workspace import Workspace
from .fold import fold_finished, fold_unready
from .paths import MODEL_FOLDER, TRAINER_BASE, Member, member_order
from .predict import postprocessing_summary
from .prediction_record import PredictionRecord
from .presets import Preset

BEST_CONFIGURATION_FILE = "best_configuration.json"


def finished_folds(model: Path, fingerprint: str, stale: list[str], training: list[str]) -> set[int]:
    """Folds whose training ended and whose validation (with probabilities) was written, made from the dataset
    `fingerprint`, that no live `train` writes now; a finished fold made from another one is named in `stale`
    instead, one being trained again in `training`."""
    folds = set()
    for fold in sorted(model.glob("fold_*")):
        if fold_finished(fold) and any((fold / "validation").glob("*.npz")):
            why = staleness(fold, fingerprint)
            if why:
                stale.append(f"{model.name}/{fold.name} ({why})")
            elif busy := fold_unready(fold):
                training.append(f"{model.name}/{fold.name} ({busy})")
            else:
                folds.add(int(fold.name.removeprefix("fold_")))
    return folds


def trained_models(ws: Workspace, fingerprint: str, stale: Optional[list[str]] = None,
                   training: Optional[list[str]] = None) -> dict[str, dict[Member, set[int]]]:
    """trainer name -> model (preset's plans, configuration) -> finished current folds, for everything under the
    workspace's nnU-Net results; stale finished folds are named in `stale`, folds a live `train` writes in
    `training`."""
    found: dict[str, dict[Member, set[int]]] = {}
    stale = [] if stale is None else stale
    training = [] if training is None else training
    if ws.results_dataset.is_dir():
        for folder in sorted(ws.results_dataset.iterdir()):
            match = MODEL_FOLDER.fullmatch(folder.name)
            if match and (folds := finished_folds(folder, fingerprint, stale, training)):
                found.setdefault(match["trainer"], {})[Member(match["plans"], match["configuration"])] = folds
    return found


@dataclass
class Selection:
    trainer: str
    members: tuple[Member, ...]  # presets in table order, 2d before 3d_fullres
    folds: tuple[int, ...]
    warnings: list[str] = field(default_factory=list)

    @property
    def configurations(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.configuration for m in self.members))

    @property
    def presets(self) -> tuple[Preset, ...]:
        return tuple(dict.fromkeys(m.preset for m in self.members))

    def described(self) -> str:
        """'2d, 3d_fullres' or '2d, 3d_fullres, resenc-m 2d'."""
        return ", ".join(m.label for m in self.members)


def select(ws: Workspace, trainer: Optional[str] = None, presets: Optional[tuple[Preset, ...]] = None) -> Selection:
    """Which trainer, models and folds to search over: the current folds finished in the models of `presets` (None:
    every preset with a finished fold) that no live `train` writes. The folds are those every configuration of one
    preset finished (the preset with the most); a model of another preset that lacks some of them is left out, so
    every model is compared on the same cases."""
    stale: list[str] = []
    training: list[str] = []
    models = trained_models(ws, dataset_fingerprint(ws), stale, training)
    if presets is not None:
        models = {t: kept for t, per in models.items()
                  if (kept := {m: f for m, f in per.items() if m.preset in presets})}
    left_out = (f"; stale folds left out: {', '.join(stale)}, retrain them with `ibsr-nnunet train "
                f"--archive-stale`" if stale else "")
    left_out += (f"; folds being trained left out: {', '.join(training)}, run `ibsr-nnunet ensemble` again when "
                 f"they finish" if training else "")
    of_presets = f" of preset {', '.join(p.name for p in presets)}" if presets is not None else ""
    if not models:
        raise InputError(f"no finished nnU-Net fold{of_presets} made from this dataset under {ws.results_dataset}; "
                         f"run `ibsr-nnunet train --fold 0 --config 2d` (and 3d_fullres) first{left_out}.")
    if trainer is None:  # the trainer with the most finished folds; a full schedule wins ties
        trainer = max(models, key=lambda t: (sum(map(len, models[t].values())), t == TRAINER_BASE))
    elif trainer not in models:
        raise InputError(f"--trainer {trainer} has no finished fold{of_presets} under {ws.results_dataset} "
                         f"(finished: {', '.join(sorted(models))}); pick one of those.")
    per_member = models[trainer]
    warnings = [f"stale folds left out: {', '.join(stale)}"] if stale else []
    if training:
        warnings.append(f"folds being trained left out: {', '.join(training)}; run `ibsr-nnunet ensemble` again "
                        f"when they finish")
    common: dict[Preset, set[int]] = {}
    ordered = sorted(per_member, key=member_order)
    for preset in dict.fromkeys(m.preset for m in ordered):
        own = {m.configuration: f for m, f in per_member.items() if m.preset == preset}
        common[preset] = set.intersection(*own.values())
        if len(own) > 1 and not common[preset]:
            alone = len(common) == 1 and presets is None
            raise InputError(f"{trainer}{_of(preset)}: 2d has folds {sorted(own['2d'])} and 3d_fullres has folds "
                             f"{sorted(own['3d_fullres'])} finished, none in common; train a common fold"
                             f"{'' if alone else ', or leave the preset out with --presets'}.")
    # the preset with the most common folds sets them; the default plans win a tie
    base = max(common, key=lambda p: (len(common[p]), p.is_default))
    folds = tuple(sorted(common[base]))
    members = tuple(m for m in ordered if set(folds) <= per_member[m])
    for preset in dict.fromkeys(m.preset for m in members):
        own = [m.configuration for m in members if m.preset == preset]
        missing = [c for c in CONFIGURATIONS if c not in own]
        if missing:
            warnings.append(f"{', '.join(missing)} has no finished fold of {trainer}{_of(preset)}: no 2d+3d_fullres "
                            f"ensemble{_of(preset)}, only {own[0]} is searched and predicted.")
    for m in ordered:
        if m not in members:
            warnings.append(f"{m.label} is left out: it has folds {sorted(per_member[m])} finished, not all of "
                            f"{', '.join(map(str, folds))} ({base.name}'s); train them, or pass --presets "
                            f"{m.preset.name} to search it on its own folds.")
        elif per_member[m] != set(folds):
            warnings.append(f"{m.label} folds {sorted(per_member[m] - set(folds))} are not finished in every "
                            f"configuration and are left out, so both are compared on the same cases.")
    if len(folds) < N_FOLDS:
        warnings.append(f"only folds {', '.join(map(str, folds))} of {N_FOLDS} are finished: the best-configuration "
                        f"search sees {len(folds)}/{N_FOLDS} of the cross-validation and the models average "
                        f"{len(folds)} fold(s); train the rest for the real thing.")
    return Selection(trainer, members, folds, warnings)


def _of(preset: Preset) -> str:
    return "" if preset.is_default else f" ({preset.name})"


@dataclass
class EnsembleResult:
    selection: Selection
    results: dict[str, float]  # model name -> cross-validation foreground-mean Dice (before postprocessing)
    winner: str  # model name
    reason: str
    predictions: dict[str, Path]  # model name -> folder of <case>.nii.gz
    best_configuration: Path  # best_configuration.json
    seconds: float


def model_record(model: str, trainer: str, *, members: tuple[Member, ...], folds: tuple[int, ...],
                 postprocessing_pkl: Path, crossval_dice: float, axcodes: tuple[str, ...]) -> PredictionRecord:
    """What `segment` needs to predict like this model did: its folds, members (plans and configuration),
    postprocessing, and the orientation (axis codes) of the images it was trained on."""
    return PredictionRecord(model, trainer, tuple(m.configuration for m in members), tuple(folds), postprocessing_pkl,
                            tuple(postprocessing_summary(postprocessing_pkl)), crossval_dice, tuple(axcodes),
                            plans=tuple(m.plans for m in members))


def best_configuration_file(ws: Workspace) -> Path:
    """Our record of the search (BestConfiguration)."""
    return ws.root / BEST_CONFIGURATION_FILE


@dataclass(frozen=True)
class BestConfiguration:
    """best_configuration.json: the search's winner, why, and what it searched (this module's docstring)."""

    winner: str
    reason: str
    crossval_dice: dict[str, float]
    crossval_dice_post_pp: float
    trainer: str
    configurations: tuple[str, ...]
    folds: tuple[int, ...]
    warnings: tuple[str, ...]
    predictions: dict[str, Path]
    dataset_fingerprint: str
    models: tuple[str, ...] = ()

    def as_record(self) -> dict:
        return {"winner": self.winner, "reason": self.reason, "crossval_dice": self.crossval_dice,
                "crossval_dice_post_pp": self.crossval_dice_post_pp, "trainer": self.trainer,
                "configurations": list(self.configurations), "models": list(self.models), "folds": list(self.folds),
                "warnings": list(self.warnings), "predictions": {m: str(p) for m, p in self.predictions.items()},
                KEY: self.dataset_fingerprint}


def write_best_configuration(ws: Workspace, record: BestConfiguration) -> Path:
    """Write the record; its path."""
    path = best_configuration_file(ws)
    write_json(path, record.as_record())
    return path


def read_best_configuration(ws: Workspace) -> Optional[BestConfiguration]:
    """The workspace's record of the search, or None when it has none; InputError naming the file when it is cut
    short or not a record."""
    path = best_configuration_file(ws)
    fix = "run `ibsr-nnunet ensemble` again to rewrite it"
    saved = read_json_object(path, fix, "a best-configuration record", missing_ok=True)
    if saved is None:
        return None
    try:
        dice, post_pp, folds = saved["crossval_dice"], saved["crossval_dice_post_pp"], saved["folds"]
        texts = (saved["winner"], saved["reason"], saved["trainer"], saved[KEY])
        configurations, warnings, predictions = saved["configurations"], saved["warnings"], saved["predictions"]
        if not all(isinstance(t, str) for t in texts) or not _strings(configurations) or not _strings(warnings):
            raise TypeError("winner, reason, trainer, dataset_fingerprint, configurations and warnings must be text")
        if not isinstance(folds, list) or any(not isinstance(f, int) or isinstance(f, bool) for f in folds):
            raise TypeError("folds must be whole numbers")
        if not isinstance(dice, dict) or not isinstance(predictions, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*dice.values(), post_pp)):
            raise TypeError("crossval_dice must map each model to a number, predictions each model to its folder")
        winner, reason, trainer, fingerprint = texts
        return BestConfiguration(
            winner=winner, reason=reason, crossval_dice={str(m): float(d) for m, d in dice.items()},
            crossval_dice_post_pp=float(post_pp), trainer=trainer, configurations=tuple(configurations),
            folds=tuple(folds), warnings=tuple(warnings),
            predictions={str(m): Path(str(p)) for m, p in predictions.items()}, dataset_fingerprint=fingerprint,
            models=tuple(map(str, saved.get("models") or ())))
    except (KeyError, TypeError) as err:
        raise InputError(f"{path} is not a best-configuration record ({type(err).__name__}: {err}); {fix}.") from None


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def search_outputs(ws: Workspace) -> list[Path]:
    """What nnU-Net's best-configuration search and our record of it write: rewritten by every `ensemble`."""
    results = ws.results_dataset
    return [best_configuration_file(ws), results / "ensembles", *sorted(results.glob("*/crossval_results_folds_*")),
            *(results / name for name in ("inference_information.json", "inference_instructions.txt",
                                          "ibsr_ensemble.log"))]


def archive_stale_search(ws: Workspace, fingerprint: str, prediction_sets: list[Path],
                           say: Callable[[str], None]) -> None:
    """Move the search's outputs and the prediction sets this run rewrites to the archive when they were made from
    another dataset (a missing or unreadable record counts as another)."""
    try:
        saved = read_best_configuration(ws)
    except InputError:
        saved = None
    made_from = saved.dataset_fingerprint if saved is not None else None
    if made_from != fingerprint:
        archive_stale_outputs(ws, search_outputs(ws), what="the best-configuration search",
                              why=f"made from dataset {short(made_from)}, the workspace now holds {short(fingerprint)}",
                              say=say)
    for folder in prediction_sets:
        why = staleness(folder, fingerprint)
        if why:
            archive_stale_outputs(ws, [folder], what=f"prediction set {folder.name}", why=why, say=say)

"""The leaderboard: every evaluated model, scored the same way on the same held-out cases, ranked by mean Dice."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from ..core import checksums, provenance
from ..core.atomic import atomic_path
from ..core.errors import InputError
from ..core.locks import Lock, lock_path
from ..core.manifest import read_manifest
from ..core.provenance import KEY
from ..core.vocabulary import TISSUES
from ..core.workspace import Workspace
from ..models import load_model
from . import statistics
from .evaluate import (
    COLUMNS,
    METRICS,
    evaluate,
    is_current,
    read_summary,
    recorded_summary,
    references,
)
from .history import training_seconds
from .metrics import NSD_TOLERANCE


def prediction_sets(ws: Workspace) -> dict[str, Path]:
    """model name -> prediction folder, for every model that has written predictions in the workspace."""
    if not ws.predictions.is_dir():
        return {}
    return {p.name: p for p in sorted(ws.predictions.iterdir())
            if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.nii.gz"))}


def case_scores(per_case: pd.DataFrame, models: list[str]) -> tuple[np.ndarray, list[str]]:
    """(models × cases) per-case mean Dice over the tissues, rows in `models` order, and the cases in column order."""
    table = per_case.pivot_table(index="model", columns="case", values="dice", aggfunc="mean")
    return table.loc[models].to_numpy(dtype=float), [str(c) for c in table.columns]


def uncertainty_notes(models: int, cases: int) -> list[str]:
    """What the intervals and p-values can say with `cases` held-out cases and `models` models, in a line or two."""
    if cases < statistics.MIN_CASES:
        return [f"{cases} held-out case(s), below {statistics.MIN_CASES}: no interval, rank1_share, p_vs_best, "
                f"volume r or significance map; with so few cases the ranking cannot tell the models apart "
                f"(IBSR18's MISA split holds out its 5 Validation_Set cases; a tree without a Validation_Set holds out "
                f"20 % of the labelled subjects, 2 of 10)."]
    if models < 2:
        return []
    return [f"smallest attainable p_vs_best with {models} models and {cases} cases: "
            f"{statistics.smallest_p_text(models, cases)} (exact one-sided Wilcoxon, Holm); "
            f"'≈' marks a model that cannot be told apart from rank 1 (p_vs_best ≥ {statistics.ALPHA})."]


def rank(per_case: pd.DataFrame, split: str, seconds: dict[str, float], *, fingerprint: str = "",
         validation: Optional[dict[str, dict[str, float]]] = None,
         nsd_tolerance: float = NSD_TOLERANCE) -> pd.DataFrame:
    """One row per model: mean and std per class of each metric, mean Dice over the tissues with its bootstrap
    interval, rank1_share and p_vs_best, volume agreement per tissue, cases, time, rank; `validation` adds each
    model's cross-validation (or internal validation) columns, which never enter the ranking.

    Ranked by mean Dice over the held-out cases (higher first); ties go to the lower mean HD95 over the tissues.
    """
    rows = []
    for model, table in per_case.groupby("model", sort=False):
        row: dict = {"model": model}
        for name in TISSUES.values():
            values = table[table["class"] == name]
            for metric in METRICS:
                row[f"{name}_{metric}_mean"] = values[metric].mean()
                finite = values[metric].replace([math.inf, -math.inf], math.nan)
                # an infinite distance (a tissue predicted nowhere) has no spread: std left empty, not a warning
                row[f"{name}_{metric}_std"] = finite.std(ddof=0) if finite.notna().all() else math.nan
        row["mean_dice"] = sum(row[f"{n}_dice_mean"] for n in TISSUES.values()) / len(TISSUES)
        row["mean_hd95"] = sum(row[f"{n}_hd95_mean"] for n in TISSUES.values()) / len(TISSUES)
        cases = sorted(table["case"].unique())
        row.update(_volume_agreement(table, len(cases)))
        row.update((validation or {}).get(model, {}))
        row.update(n_cases=len(cases), cases=";".join(cases), train_seconds=seconds.get(model, math.nan), split=split,
                   nsd_tolerance_mm=nsd_tolerance, dataset_fingerprint=fingerprint)
        rows.append(row)
    board = pd.DataFrame(rows).sort_values(["mean_dice", "mean_hd95"], ascending=[False, True], kind="stable")
    board = board.reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    for column in UNCERTAINTY:
        board[column] = math.nan
    scores, cases = case_scores(per_case, board["model"].tolist())
    if len(cases) >= statistics.MIN_CASES:
        drawn = statistics.bootstrap(scores)
        board["mean_dice_ci_low"], board["mean_dice_ci_high"] = drawn.low, drawn.high
        board["rank1_share"] = drawn.rank1_share
        board["p_vs_best"] = statistics.p_vs_best(scores, 0)
    for column in (*VALIDATION, *(f"{t}_cv_dice_mean" for t in TISSUES.values())):
        if column not in board:
            board[column] = math.nan
    first = ["rank", "model", "mean_dice", *UNCERTAINTY, "n_cases", "train_seconds"]
    return board[first + [c for c in board.columns if c not in first and c != "mean_hd95"]]


UNCERTAINTY = ("mean_dice_ci_low", "mean_dice_ci_high", "rank1_share", "p_vs_best")
VALIDATION = ("cv_dice_mean", "cv_n", "internal_val_dice")


def _volume_agreement(table: pd.DataFrame, cases: int) -> dict[str, float]:
    """<T>_vol_bias_ml, _vol_loa_low_ml, _vol_loa_high_ml, _vol_r (prediction minus reference, over the cases);
    r only from MIN_CASES cases on."""
    row = {}
    for name in TISSUES.values():
        values = table[table["class"] == name]
        found = statistics.agreement(values["ref_ml"].to_numpy(), values["pred_ml"].to_numpy())
        row.update({f"{name}_vol_bias_ml": found.bias, f"{name}_vol_loa_low_ml": found.loa_low,
                    f"{name}_vol_loa_high_ml": found.loa_high,
                    f"{name}_vol_r": found.r if cases >= statistics.MIN_CASES else math.nan})
    return row


def validation_columns(ws: Workspace, models: list[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """model -> its validation columns: nnU-Net's pooled cross-validation Dice (cv_dice_mean, <T>_cv_dice_mean,
    cv_n) from the folds behind it, or a baseline's internal validation Dice from its run record; and a sentence
    for each summary that could not be read."""
    found: dict[str, dict[str, float]] = {}
    unreadable: list[str] = []
    for name in models:
        model = load_model(ws, name)
        if model is None:
            continue  # predictions made elsewhere (`evaluate --name`): no validation of theirs is known
        validation = model.validation()
        if validation.columns:
            found[name] = validation.columns
        if validation.unreadable:
            unreadable.append(validation.unreadable)
    return found, unreadable


class NothingToRank(InputError):
    """No prediction set or evaluation of this dataset exists."""


@dataclass
class Leaderboard:
    board: pd.DataFrame
    per_case: pd.DataFrame
    csv: Path
    evaluated_now: list[str]
    split: str
    left_out: list[str]  # one sentence per model not ranked: made from another dataset or other weights
    notes: list[str]  # what the intervals and p-values can say with this many held-out cases
    redone: dict[str, str] = field(default_factory=dict)  # model -> why its evaluation was redone (older metrics)

    def redone_line(self) -> Optional[str]:
        """One line: how many models were re-evaluated from their predictions because of their metrics, and why."""
        if not self.redone:
            return None
        why: dict[str, list[str]] = {}
        for model, reason in sorted(self.redone.items()):
            why.setdefault(reason, []).append(model)
        models = "model" if len(self.redone) == 1 else "models"
        return (f"re-evaluated {len(self.redone)} {models} from their predictions: "
                + "; ".join(f"{', '.join(names)} ({reason})" for reason, names in why.items()))


def build(ws: Workspace, *, jobs: int = 1, nsd_tolerance: float = NSD_TOLERANCE,
          on_model: Optional[Callable[[str], None]] = None, say: Callable[[str], None] = print) -> Leaderboard:
    """Evaluate every current prediction set not yet (or no longer) evaluated, redo evaluations scored with older
    metrics or another NSD tolerance, then rank all evaluations made on this dataset and write leaderboard.csv;
    stale prediction sets (another dataset, or weights changed since) and evaluations are left out, and said so. A
    board (and its figures) of another dataset is moved to the archive first."""
    fingerprint = provenance.dataset_fingerprint(ws)
    with Lock(lock_path(ws.leaderboard), "the leaderboard", "ibsr-nnunet leaderboard"):
        archived = _archive_board_of_another_dataset(ws, fingerprint, say)
        evaluated_now, left_out, redone = _evaluate_new(ws, fingerprint, jobs=jobs, nsd_tolerance=nsd_tolerance,
                                                        on_model=on_model, say=say)
        try:
            per_case = _current_evaluations(ws, fingerprint, left_out, nsd_tolerance=nsd_tolerance)
        except NothingToRank as nothing:
            said = [f"{model}: {why}" for model, why in left_out.items()]
            previous = ws.leaderboard if ws.leaderboard.is_file() else archived
            if previous:  # no score of another dataset may survive in it
                with atomic_path(ws.leaderboard) as tmp:
                    pd.DataFrame(columns=pd.read_csv(previous, nrows=0).columns).to_csv(tmp, index=False)
                stale = f" (left out: {'; '.join(said)})" if said else ""
                raise NothingToRank(
                    f"{str(nothing).rstrip('.')}{stale}; {ws.leaderboard} now lists no model.") from None
            raise
        manifest = read_manifest(ws)
        split = f"{manifest.split.policy}: {', '.join(manifest.split.heldout)}"
        seconds = {model: training_seconds(ws, model) for model in per_case["model"].unique()}
        models = list(per_case["model"].unique())
        validation, unreadable = validation_columns(ws, models)
        board = rank(per_case, split, seconds, fingerprint=fingerprint, validation=validation,
                     nsd_tolerance=nsd_tolerance)
        with atomic_path(ws.leaderboard) as tmp:
            board.to_csv(tmp, index=False)
    return Leaderboard(board, per_case, ws.leaderboard, evaluated_now, split,
                       [f"{model}: {why}" for model, why in left_out.items()],
                       dataset_changes_note(ws) + uncertainty_notes(len(board), int(board["n_cases"].iloc[0]))
                       + unreadable, redone=redone)


def _archive_board_of_another_dataset(ws: Workspace, fingerprint: str, say: Callable[[str], None]) -> Optional[Path]:
    """Move leaderboard.csv and the figures drawn from it to the archive when it ranks models of another dataset;
    where the board went, or None when it stays."""
    try:
        made_on = set(pd.read_csv(ws.leaderboard, usecols=[KEY], dtype=str)[KEY])  # str: a hex string can look numeric
    except (OSError, ValueError, pd.errors.EmptyDataError):
        made_on = {None} if ws.leaderboard.is_file() else set()
    other = sorted({provenance.short(f if isinstance(f, str) else None) for f in made_on if f != fingerprint})
    if not other:
        return None
    target = provenance.archive(ws, [p for p in (ws.leaderboard, ws.figures) if p.exists()])
    say(f"archived {ws.leaderboard.name} and its figures (ranked on dataset {', '.join(other)}, the workspace now "
        f"holds {provenance.short(fingerprint)}) to {target} before replacing them")
    return target / ws.leaderboard.relative_to(ws.root)


def _evaluate_new(ws: Workspace, fingerprint: str, *, jobs: int, nsd_tolerance: float,
                  on_model: Optional[Callable[[str], None]],
                  say: Callable[[str], None]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Evaluate the prediction sets made from this dataset whose evaluation is missing, older than they are or
    scored with other metrics, and redo other evaluations of this dataset scored with other metrics from the
    predictions they recorded; the models evaluated now, why each stale one is left out, why each was redone."""
    evaluated_now, left_out, redone = [], {}, {}
    rescored = _scored_against_other_references(ws, fingerprint)

    def evaluate_set(model: str, folder: Path) -> None:
        recorded = recorded_summary(ws, model)
        if recorded and recorded.dataset_fingerprint == fingerprint:
            reason = recorded.outdated_metrics(nsd_tolerance=nsd_tolerance) or rescored.get(model)
            if reason:
                redone[model] = reason
        if on_model:
            on_model(model)
        evaluate(ws, folder, model, jobs=jobs, nsd_tolerance=nsd_tolerance, say=say)
        evaluated_now.append(model)

    sets = prediction_sets(ws)
    for model, folder in sets.items():
        why = provenance.contradicts(folder, fingerprint)
        if why:
            left_out[model] = f"its predictions are stale ({why}); predict again to rank it"
        elif other_weights := predicted_with_other_weights(ws, model, folder):
            left_out[model] = other_weights
        elif model in rescored or not is_current(ws, folder, model, fingerprint=fingerprint,
                                                 nsd_tolerance=nsd_tolerance):
            evaluate_set(model, folder)
    # evaluations of prediction folders outside the workspace (`evaluate --predictions` elsewhere)
    for summary in sorted(ws.evaluation.glob("*.json")) if ws.evaluation.is_dir() else []:
        recorded = recorded_summary(ws, summary.stem)
        if summary.stem in sets or not recorded or recorded.dataset_fingerprint != fingerprint:
            continue
        reason = recorded.outdated_metrics(nsd_tolerance=nsd_tolerance) or rescored.get(summary.stem)
        folder = recorded.predictions
        if reason and not folder.is_dir():
            left_out[summary.stem] = (f"{reason}, and its predictions {folder} are gone; evaluate it again with "
                                      f"`ibsr-nnunet evaluate` to rank it")
        elif reason:
            why = provenance.contradicts(folder, fingerprint)
            if why:
                left_out[summary.stem] = f"{reason}, and its predictions are stale ({why}); predict again to rank it"
            else:
                evaluate_set(summary.stem, folder)
    return evaluated_now, left_out, redone


def predicted_with_other_weights(ws: Workspace, model: str, folder: Path) -> Optional[str]:
    """Why the prediction set in `folder` is not made with the weights there now (retrained or replaced since), with
    what to do, in a sentence; None when the weights it records are unchanged, or it records none."""
    signature = provenance.recorded_weights(folder)
    changed = provenance.weights_changed(ws, signature) if signature else None
    if changed is None:
        return None
    known = load_model(ws, model)
    again = f"run `{known.remake}`" if known is not None else "predict it again"
    return f"its predictions were made with other weights ({changed}); {again} to rank it"


def _scored_against_other_references(ws: Workspace, fingerprint: str) -> dict[str, str]:
    """model -> why its evaluation of this dataset must be redone: it was scored against other reference labels
    than the workspace holds now (or recorded none)."""
    summaries = sorted(ws.evaluation.glob("*.json")) if ws.evaluation.is_dir() else []
    evaluated = {s.stem: recorded for s in summaries
                 if (recorded := recorded_summary(ws, s.stem)) and recorded.dataset_fingerprint == fingerprint}
    if not evaluated:
        return {}
    now = checksums.reference_sha256(ws, references(ws))
    return {model: why for model, recorded in evaluated.items() if (why := recorded.changed_references(now))}


def dataset_changes_note(ws: Workspace) -> list[str]:
    """One sentence when the converted dataset differs from what `convert` wrote (the scores are then against it)."""
    changed = checksums.changes(ws)
    if not changed:
        return []
    return [f"warning: {ws.raw_dataset} was changed since convert wrote it: {'; '.join(changed)}; the scores are "
            f"against it as it is now, run `ibsr-nnunet convert SOURCE --force` to restore it."]


def _current_evaluations(ws: Workspace, fingerprint: str, left_out: dict[str, str], *,
                         nsd_tolerance: float) -> pd.DataFrame:
    """Every per-case evaluation made on this dataset with the current metrics, refused when the models were scored
    on different cases; any other evaluation is left out, and said why."""
    tables = []
    for csv in sorted(ws.evaluation.glob("*.csv")) if ws.evaluation.is_dir() else []:
        if csv.stem in left_out:
            continue  # its prediction set is stale: so is its evaluation
        try:
            recorded = read_summary(ws, csv.stem)
        except InputError as unreadable:
            left_out[csv.stem] = str(unreadable).rstrip(".")
            continue
        made_on = recorded.dataset_fingerprint if recorded is not None else None
        if recorded is None or made_on != fingerprint:
            left_out[csv.stem] = (f"evaluated on dataset {provenance.short(made_on)}, not on this one; evaluate it "
                                  f"again to rank it")
            continue
        outdated = recorded.outdated_metrics(nsd_tolerance=nsd_tolerance)
        if outdated:
            left_out[csv.stem] = f"{outdated}; evaluate it again to rank it"
            continue
        table = pd.read_csv(csv)
        if list(table.columns) != COLUMNS or table.empty:
            left_out[csv.stem] = (f"{csv} holds no rows or other columns than {', '.join(COLUMNS)}; evaluate it "
                                  f"again to rank it")
            continue
        tables.append(table)
    if not tables:
        raise NothingToRank(f"nothing to rank: no current predictions under {ws.predictions} and no evaluations "
                            f"of this dataset under {ws.evaluation}; run `ibsr-nnunet ensemble` or `ibsr-nnunet "
                            f"baseline predict` first.")
    per_case = pd.concat(tables, ignore_index=True)
    cases_per_model = per_case.groupby("model")["case"].apply(lambda c: tuple(sorted(set(c))))
    if cases_per_model.nunique() > 1:
        odd = cases_per_model[cases_per_model != cases_per_model.mode()[0]].index[0]
        raise InputError(f"{ws.evaluation / (odd + '.csv')} was scored on cases {list(cases_per_model[odd])}, the "
                         f"others on {list(cases_per_model.mode()[0])}; "
                         "evaluate every model on the same held-out cases.")
    return per_case

"""Score one folder of predictions against the workspace's held-out reference labels, per case and tissue class;
the one module that writes and reads `<workspace>/evaluation/<name>.csv` (one row per case and class: COLUMNS) and
its summary `<name>.json`:

    model, predictions (the folder scored), cases (held-out case IDs), metrics, metrics_version, nsd_tolerance_mm,
    mean and std (class -> metric -> value), mean_dice, newest_prediction_mtime, dataset_fingerprint,
    reference_sha256 (case -> checksum of the reference labels scored against)

Summaries of older metric sets lack keys: version 1 has no metrics, metrics_version or nsd_tolerance_mm (its metrics
are dice, hd, hd95 and avd); one without reference_sha256 has no checksums recorded. `read_summary` refuses one that
is cut short or not a summary in one sentence; for `recorded_summary` a summary that is missing or cannot be read
counts as no evaluation: it is redone."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from ..core import checksums, provenance
from ..core.atomic import atomic_path, write_json
from ..core.errors import InputError
from ..core.jsonfile import read_json_object
from ..core.locks import Lock, lock_path
from ..core.manifest import read_manifest
from ..core.names import check_model_name
from ..core.workspace import Workspace
from ..data.volumes import read_volume
from .metrics import NSD_TOLERANCE, case_metrics, check_tolerance

METRICS = ("dice", "hd", "hd95", "avd", "nsd")
# Bumped whenever a metric or a recorded column is added or changes: an evaluation recorded with another version is
# redone. Version 1 (no version in the summary) had dice, hd, hd95 and avd; version 2 adds nsd; version 3 adds the
# reference and predicted volumes in mL (ref_ml, pred_ml) behind the leaderboard's volume agreement.
METRICS_VERSION = 3
ADDED = {2: "nsd", 3: "volumes in mL"}  # what each version added
COLUMNS = ["model", "case", "class", "label", *METRICS, "ref_voxels", "pred_voxels", "ref_ml", "pred_ml"]
V1_METRICS = ("dice", "hd", "hd95", "avd")  # what a summary without metrics (version 1) was scored with
AFFINE_TOLERANCE = 1e-3  # mm: float32 headers round-trip with ~1e-5 error; anything larger is another grid


def references(ws: Workspace) -> dict[str, Path]:
    """Held-out case ID -> reference label file (labelsTs: only the held-out cases have labels)."""
    folder = ws.raw_dataset / "labelsTs"
    found = {p.name[: -len(".nii.gz")]: p for p in sorted(folder.glob("*.nii.gz"))}
    if not found:
        raise InputError(f"{folder} holds no reference labels; run `ibsr-nnunet convert` on a labelled source first.")
    return found


def _score_case(case: str, reference: Path, prediction: Path, nsd_tolerance: float) -> list[dict]:
    ref, pred = read_volume(reference), read_volume(prediction)
    if ref.array.shape != pred.array.shape or not np.allclose(ref.affine, pred.affine, atol=AFFINE_TOLERANCE):
        raise InputError(
            f"{prediction}: its grid (shape {pred.array.shape}, origin "
            f"{np.round(pred.affine[:3, 3], 2).tolist()}) differs from the reference {reference.name} (shape "
            f"{ref.array.shape}, origin {np.round(ref.affine[:3, 3], 2).tolist()}); predict on the workspace's "
            f"imagesTs and keep each input's geometry.")
    values = np.unique(pred.array)
    if not set(values.tolist()) <= {0, 1, 2, 3}:
        raise InputError(f"{prediction}: holds labels {values.tolist()}, expected only 0 (background), 1 (CSF), "
                         f"2 (GM), 3 (WM); map the labels before evaluating.")
    rows = case_metrics(ref.array.astype(np.uint8), pred.array.astype(np.uint8), ref.spacing,
                        nsd_tolerance=nsd_tolerance)
    voxel_ml = float(np.prod(ref.spacing)) / 1000.0  # mm³ -> mL: volumes for the agreement statistics
    return [{"case": case, **row, "ref_ml": row["ref_voxels"] * voxel_ml, "pred_ml": row["pred_voxels"] * voxel_ml}
            for row in rows]


@dataclass
class Evaluation:
    name: str
    table: pd.DataFrame  # one row per case and class, COLUMNS
    csv: Path
    summary: Path
    seconds: float

    @property
    def per_class(self) -> pd.DataFrame:
        """Mean and standard deviation per tissue, exactly as recorded in the summary JSON."""
        return per_class_summary(self.table)


def per_class_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per tissue (rows, in label order): mean and population standard deviation (ddof=0) of each metric."""
    return table.groupby("class", sort=False)[list(METRICS)].agg(["mean", lambda v: v.std(ddof=0)]).rename(
        columns={"<lambda_0>": "std"}, level=1)


def evaluate(ws: Workspace, predictions: Path, name: str, *, jobs: int = 1, nsd_tolerance: float = NSD_TOLERANCE,
             on_case_done: Optional[Callable[[str], None]] = None, say: Callable[[str], None] = print) -> Evaluation:
    """Metrics of every held-out case in `predictions` (`<case>.nii.gz`), NSD at `nsd_tolerance` mm; refuses a
    missing case, another grid, or predictions recorded as made from another dataset. An evaluation of `name` on
    another dataset is moved to the archive first."""
    started = time.perf_counter()
    check_tolerance(nsd_tolerance)
    check_model_name(name, "--name")
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise InputError(f"{predictions} is not a folder of predictions; pass the folder that holds <case>.nii.gz.")
    manifest = read_manifest(ws)
    fingerprint = manifest.fingerprint
    _refuse_stale(predictions, fingerprint)
    refs = references(ws)
    found = _matching_predictions(ws, set(manifest.case_ids()), predictions, refs)
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(refs)))) as pool:
        futures = {case: pool.submit(_score_case, case, refs[case], found[case], nsd_tolerance) for case in refs}
        for case, future in futures.items():
            rows.extend(future.result())
            if on_case_done:
                on_case_done(case)
    table = pd.DataFrame([{"model": name, **row} for row in rows], columns=COLUMNS)
    ws.evaluation.mkdir(parents=True, exist_ok=True)
    csv, summary = ws.evaluation / f"{name}.csv", summary_path(ws, name)
    with Lock(lock_path(csv.with_suffix("")), f"evaluation {name}", f"ibsr-nnunet evaluate --name {name}"):
        _archive_other_dataset(ws, name, fingerprint, say)
        with atomic_path(csv) as tmp:
            table.to_csv(tmp, index=False)
        per_class = per_class_summary(table)
        means, stds = per_class.xs("mean", axis=1, level=1), per_class.xs("std", axis=1, level=1)
        write_summary(ws, EvaluationSummary(
            model=name, predictions=predictions.resolve(), cases=tuple(sorted(refs)), metrics=METRICS,
            metrics_version=METRICS_VERSION, nsd_tolerance_mm=float(nsd_tolerance),
            mean=_nested_floats(means.to_dict(orient="index")), std=_nested_floats(stds.to_dict(orient="index")),
            mean_dice=float(means["dice"].mean()),
            newest_prediction_mtime=max(found[c].stat().st_mtime for c in refs), dataset_fingerprint=fingerprint,
            reference_sha256={case: checksums.sha256(refs[case]) for case in sorted(refs)}))
    return Evaluation(name, table, csv, summary, time.perf_counter() - started)


def _archive_other_dataset(ws: Workspace, name: str, fingerprint: str, say: Callable[[str], None]) -> None:
    """An evaluation of `name` recorded on another dataset (or on none) is moved to the archive, not overwritten."""
    summary = summary_path(ws, name)
    try:
        saved = read_summary(ws, name)
    except InputError:
        saved = None  # unreadable: made on no known dataset
    made_on = saved.dataset_fingerprint if saved is not None else None
    if summary.exists() and made_on != fingerprint:
        why = f"scored on dataset {provenance.short(made_on)}, the workspace now holds {provenance.short(fingerprint)}"
        provenance.archive_stale_outputs(ws, [summary, summary.with_suffix(".csv")], what=f"evaluation {name}",
                                         why=why, say=say)


def _refuse_stale(predictions: Path, fingerprint: str) -> None:
    """Predictions recorded as made from another dataset are refused; predictions without a record (made elsewhere)
    are judged on their case names and grids, against this dataset's references."""
    why = provenance.contradicts(predictions, fingerprint)
    if why:
        raise InputError(f"{predictions} is stale: {why}; predict again (`ibsr-nnunet ensemble` or "
                         f"`ibsr-nnunet baseline predict`) before evaluating.")


def _matching_predictions(ws: Workspace, known: set[str], predictions: Path,
                          refs: dict[str, Path]) -> dict[str, Path]:
    """case -> prediction file; refused when a file is not one of the `known` cases of the workspace or a held-out
    case is missing."""
    found = {p.name[: -len(".nii.gz")]: p for p in sorted(predictions.glob("*.nii.gz"))}
    unknown = sorted(set(found) - known)
    if unknown:
        raise InputError(f"{found[unknown[0]]}: case {unknown[0]} is not a case of {ws.dataset_name}; "
                         f"name predictions <case>.nii.gz after the workspace's cases (e.g. {sorted(refs)[0]}.nii.gz).")
    missing = sorted(set(refs) - set(found))
    if missing:
        raise InputError(f"{predictions}: no prediction for held-out case {missing[0]} "
                         f"(expected {predictions / (missing[0] + '.nii.gz')}); predict every held-out case.")
    return found


# ---- <name>.json ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluationSummary:
    """An evaluation's summary: what was scored, against what, how, and the means (this module's docstring)."""

    model: str
    predictions: Path  # the folder scored, resolved
    cases: tuple[str, ...]
    metrics: tuple[str, ...]
    metrics_version: int
    nsd_tolerance_mm: Optional[float]  # None: not recorded
    mean: dict[str, dict[str, float]]  # class -> metric -> value
    std: dict[str, dict[str, float]]
    mean_dice: float
    newest_prediction_mtime: float
    dataset_fingerprint: Optional[str]  # None: not recorded
    reference_sha256: Optional[dict[str, str]]  # case -> checksum; None: not recorded

    def as_record(self) -> dict:
        return {"model": self.model, "predictions": str(self.predictions), "cases": list(self.cases),
                "metrics": list(self.metrics), "metrics_version": self.metrics_version,
                "nsd_tolerance_mm": self.nsd_tolerance_mm, "mean": self.mean, "std": self.std,
                "mean_dice": self.mean_dice, "newest_prediction_mtime": self.newest_prediction_mtime,
                "dataset_fingerprint": self.dataset_fingerprint, "reference_sha256": self.reference_sha256}

    def outdated_metrics(self, *, nsd_tolerance: float = NSD_TOLERANCE) -> Optional[str]:
        """Why its metrics are not this version's at this NSD tolerance (a phrase), or None."""
        version = self.metrics_version
        if version != METRICS_VERSION:
            added = [ADDED[v] for v in range(version + 1, METRICS_VERSION + 1) if v in ADDED]
            return (f"scored with metric set v{version} ({', '.join(self.metrics)}), not v{METRICS_VERSION}"
                    + (f" (adds {', '.join(added)})" if added else ""))
        if self.nsd_tolerance_mm is None:
            return f"NSD tolerance not recorded, not {nsd_tolerance:g} mm"
        if self.nsd_tolerance_mm != float(nsd_tolerance):
            return f"NSD scored at {self.nsd_tolerance_mm:g} mm, not {nsd_tolerance:g} mm"
        return None

    def changed_references(self, now: dict[str, str]) -> Optional[str]:
        """Why it was not scored against the reference labels `now` (case -> checksum), or None."""
        if self.reference_sha256 is None:
            return "the checksums of the reference labels it was scored against are not recorded"
        scored_against = self.reference_sha256
        changed = sorted(case for case in set(scored_against) | set(now) if scored_against.get(case) != now.get(case))
        if changed:
            return f"the reference labels of {', '.join(changed)} changed since it was scored"
        return None


def summary_path(ws: Workspace, name: str) -> Path:
    return ws.evaluation / f"{name}.json"


def write_summary(ws: Workspace, summary: EvaluationSummary) -> None:
    write_json(summary_path(ws, summary.model), summary.as_record())


def read_summary(ws: Workspace, name: str) -> Optional[EvaluationSummary]:
    """The evaluation summary of `name`, or None when it has none; InputError naming the file when it is cut short
    or not a summary."""
    path = summary_path(ws, name)
    fix = f"run `ibsr-nnunet evaluate --name {name}` on its predictions again to rewrite it"
    saved = read_json_object(path, fix, "an evaluation summary", missing_ok=True)
    if saved is None:
        return None
    try:
        model, predictions, cases = saved["model"], saved["predictions"], saved["cases"]
        if not isinstance(model, str) or not isinstance(predictions, str) or not _strings(cases):
            raise TypeError("model and predictions must be text, cases a list of case IDs")
        metrics, version = saved.get("metrics", list(V1_METRICS)), saved.get("metrics_version", 1)
        if not _strings(metrics) or not _whole(version):
            raise TypeError("metrics must be a list of names, metrics_version a whole number")
        tolerance, fingerprint = saved.get("nsd_tolerance_mm"), saved.get("dataset_fingerprint")
        references = saved.get("reference_sha256")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError("dataset_fingerprint must be text")
        return EvaluationSummary(
            model=model, predictions=Path(predictions), cases=tuple(cases), metrics=tuple(metrics),
            metrics_version=version, nsd_tolerance_mm=None if tolerance is None else _number(tolerance),
            mean=_nested_floats(saved["mean"]), std=_nested_floats(saved["std"]),
            mean_dice=_number(saved["mean_dice"]), newest_prediction_mtime=_number(saved["newest_prediction_mtime"]),
            dataset_fingerprint=fingerprint,
            reference_sha256=({str(c): str(s) for c, s in references.items()} if isinstance(references, dict)
                              else None))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path} is not an evaluation summary ({type(err).__name__}: {err}); {fix}.") from None


def recorded_summary(ws: Workspace, name: str) -> Optional[EvaluationSummary]:
    """The evaluation summary of `name`, or None when it or its CSV is missing or it cannot be read: an evaluation
    that counts as none, redone and never current."""
    if not (ws.evaluation / f"{name}.csv").is_file():
        return None
    try:
        return read_summary(ws, name)
    except InputError:
        return None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _nested_floats(table: Any) -> dict[str, dict[str, float]]:
    """class -> metric -> value, every value a float (an infinite distance stays infinite)."""
    if not isinstance(table, dict) or not all(isinstance(row, dict) for row in table.values()):
        raise TypeError("mean and std must map each class to its metrics")
    return {str(c): {str(m): _number(v) for m, v in row.items()} for c, row in table.items()}


def is_current(ws: Workspace, predictions: Path, name: str, *, fingerprint: str,
               nsd_tolerance: float = NSD_TOLERANCE) -> bool:
    """True when `name` was evaluated on the dataset `fingerprint` from these predictions, with this metric set and
    NSD tolerance, and none changed since."""
    recorded = recorded_summary(ws, name)
    if recorded is None or recorded.dataset_fingerprint != fingerprint:
        return False
    if recorded.outdated_metrics(nsd_tolerance=nsd_tolerance):
        return False
    files = [predictions / f"{case}.nii.gz" for case in recorded.cases]
    return (recorded.predictions == predictions.resolve() and bool(files) and all(f.is_file() for f in files)
            and max(f.stat().st_mtime for f in files) <= recorded.newest_prediction_mtime)

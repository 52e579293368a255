"""nnU-Net's own cross-validation Dice of a model, from its validation summaries, pooled over cases (no nnunetv2).

Where it is read from, first found wins:

1. the cross-validation folder behind the model (``crossval_results_folds_*`` of a configuration, or
   ``ensembles/ensemble___*`` of the ensemble; the folder of the model's ``postprocessing.pkl``): its
   ``postprocessing.json`` holds the per-class means over all the folds' validation cases after the postprocessing
   nnU-Net chose (identical to before when it chose none), and its ``summary.json`` lists those cases;
2. that folder's ``summary.json`` alone (before postprocessing);
3. the folds' own ``fold_*/validation/summary.json`` (one configuration only; before postprocessing).

Every one of them pools the cases of all folds (each case counts once, whatever its fold's size), never averages
the folds' means. A class's mean skips cases where nnU-Net's Dice is undefined (NaN: the class absent from both
reference and prediction), as nnU-Net does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.jsonfile import read_json
from ..core.vocabulary import TISSUES
from ..core.workspace import Workspace
from .fold import read_summary, summary_file
from .prediction_record import PredictionRecord


@dataclass
class CrossValidation:
    dice: dict[str, float]  # tissue name -> pooled mean Dice over the validation cases
    n: int  # validation cases pooled
    postprocessed: bool  # nnU-Net chose a postprocessing, and the numbers are after it
    source: Path  # the summary read

    @property
    def mean(self) -> float:
        """Mean over the tissues (nnU-Net's foreground mean)."""
        return sum(self.dice.values()) / len(self.dice)


def pooled_dice(summaries: list[Path]) -> tuple[dict[str, float], int]:
    """tissue -> mean Dice over the cases of all `summaries` together (nnU-Net's summary.json format), and the
    number of cases."""
    cases = [case for summary in summaries for case in read_summary(summary)["metric_per_case"]]
    dice = {}
    for label, name in TISSUES.items():
        values = [float(v) for case in cases
                  if (v := case["metrics"].get(str(label), {}).get("Dice")) is not None and not math.isnan(float(v))]
        dice[name] = sum(values) / len(values) if values else math.nan
    return dice, len(cases)


def crossval_dice(ws: Workspace, record: PredictionRecord) -> Optional[CrossValidation]:
    """The cross-validation Dice behind an nnU-Net prediction set, from its `record` (trainer, configurations,
    folds, postprocessing_file); None when nnU-Net wrote none of the summaries."""
    source = record.postprocessing_file.parent if record.postprocessing_file else None
    if source is not None and (source / "summary.json").is_file():
        dice, n = pooled_dice([source / "summary.json"])
        chosen = source / "postprocessing.json"
        if chosen.is_file():
            record_pp = read_json(chosen, "run `ibsr-nnunet ensemble` again")
            means = record_pp["postprocessed"]["mean"]
            dice = {name: float(means[str(label)]["Dice"]) for label, name in TISSUES.items()}
            return CrossValidation(dice, n, bool(record_pp.get("postprocessing_fns")), chosen)
        return CrossValidation(dice, n, False, source / "summary.json")
    if len(record.members) != 1:
        return None
    summaries = [summary_file(record.members[0].fold(ws, record.trainer, fold)) for fold in record.folds]
    if not summaries or not all(s.is_file() for s in summaries):
        return None
    dice, n = pooled_dice(summaries)
    return CrossValidation(dice, n, False, summaries[0].parent.parent.parent)

"""CPU accuracy of the baselines and their ensembles on the real IBSR18 Training_Set, through the CLI.

Converts the shared Training_Set + Test_Set into a workspace (held out: IBSR_01 and IBSR_08, the workspace's own
split: the tree has no Validation_Set), then with the CPU defaults (iteration budgets, seed 0):
  - trains and predicts unet2d on each view (thickest = coronal on IBSR, axial, sagittal) and unet3d, all with
    dice_ce, and unet2d on the coronal view without left-right flips (the flip comparison);
  - fuses the three views, and the three views with unet3d, by mean probability and by majority vote
    (`baseline ensemble`);
  - ranks everything with `leaderboard` and measures test-time mirroring of the flipped and the unflipped unet2d;
  - prints one table (mean and per-tissue Dice, HD95, training minutes) and, with --write, puts it into
    bench/README.md between its baseline_cpu markers.

    python bench/baseline_cpu.py [--out DIR] [--phase all|train|score] [--write]

A phase can be rerun: training resumes or says it is finished, predictions newer than their weights are kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(os.environ.get("IBSR_SHARED", ROOT.parent / "shared")) / "data" / "ibsr18"
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- baseline_cpu: begin -->", "<!-- baseline_cpu: end -->"

VIEWS = ("unet2d__dice_ce", "unet2d_axial__dice_ce", "unet2d_sagittal__dice_ce")
RUNS = {  # name -> `baseline train` options beyond the CPU defaults
    "unet2d__dice_ce": ["--model", "unet2d"],
    "unet2d_axial__dice_ce": ["--model", "unet2d", "--view", "axial"],
    "unet2d_sagittal__dice_ce": ["--model", "unet2d", "--view", "sagittal"],
    "unet3d__dice_ce": ["--model", "unet3d"],
    "unet2d_coronal__dice_ce": ["--model", "unet2d", "--view", "coronal", "--no-flip"],  # the flip comparison
}
ENSEMBLES = {  # name -> (members, vote)
    "baseline_ensemble_views": (VIEWS, "mean"),
    "baseline_ensemble_views_vote": (VIEWS, "majority"),
    "baseline_ensemble_views_3d": ((*VIEWS, "unet3d__dice_ce"), "mean"),
    "baseline_ensemble_views_3d_vote": ((*VIEWS, "unet3d__dice_ce"), "majority"),
}


def ibsr(ws: Path, *args: str) -> float:
    """Run one ibsr-nnunet command on the workspace, its output shown; its wall seconds."""
    started = time.perf_counter()
    print(f"$ ibsr-nnunet {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws), *args])
    if done.returncode != 0:
        sys.exit(f"ibsr-nnunet {' '.join(args)} failed with exit code {done.returncode}")
    return time.perf_counter() - started


def train(ws: Path) -> None:
    if not (ws / "nnUNet_raw").is_dir():
        ibsr(ws, "convert", str(SOURCE))
    for name, options in RUNS.items():
        ibsr(ws, "baseline", "train", *options, "--loss", "dice_ce", "--device", "cpu")
        view = [options[i + 1] for i, o in enumerate(options) if o == "--view"]
        ibsr(ws, "baseline", "predict", "--model", options[1], *(["--view", *view] if view else []),
             "--loss", "dice_ce", "--device", "cpu")


def mirroring_dice(run: Path, cases: list[tuple[str, Path, Path]]) -> dict[bool, np.ndarray]:
    """tta -> per-tissue Dice averaged over `cases` (id, image, label), predicted by the run with and without
    test-time mirroring, each image turned to the training orientation first, as every command does."""
    from baselines.infer import Predictor
    from ibsr_nnunet.core.oriented import Prediction, predict_oriented
    from ibsr_nnunet.data.volumes import read_volume
    from ibsr_nnunet.evaluation.metrics import case_metrics

    means = {}
    for tta in (False, True):
        predictor = Predictor(run, device="cpu", tta=tta)
        scores = []
        for case_id, image, label in cases:
            [carried] = predict_oriented([(case_id, lambda: read_volume(image))], predictor.orientation.axcodes,
                                         lambda volumes: (Prediction(k, predictor(v)[0]) for k, v in volumes))
            reference = read_volume(label)
            scores.append([row["dice"] for row in case_metrics(reference.array.astype(np.uint8),
                                                                carried.prediction.labels, reference.spacing)])
        means[tta] = np.mean(scores, axis=0)
    return means


def score(ws: Path) -> str:
    """Ensembles, leaderboard and mirroring; the markdown table."""
    from ibsr_nnunet.core.vocabulary import TISSUES
    from ibsr_nnunet.core.workspace import Workspace

    seconds = {}
    for name, (members, vote) in ENSEMBLES.items():
        seconds[name] = ibsr(ws, "baseline", "ensemble", "--members", ",".join(members), "--name", name,
                             "--vote", vote, "--device", "cpu")
    ibsr(ws, "leaderboard")
    with open(ws / "leaderboard.csv", newline="") as handle:
        board = {row["model"]: row for row in csv.DictReader(handle)}
    minutes = {name: json.loads((ws / "baselines" / name / "run.json").read_text())["train_seconds"] / 60
               for name in RUNS}
    iterations = {name: json.loads((ws / "baselines" / name / "run.json").read_text())["options"]["iterations"]
                  for name in RUNS}
    tissues = list(TISSUES.values())
    lines = ["| model | mean Dice | " + " | ".join(f"{t} Dice" for t in tissues) + " | "
             + " | ".join(f"{t} HD95 (mm)" for t in tissues) + " | training |",
             "|---|---|" + "---|" * (2 * len(tissues)) + "---|"]

    def row(name: str, training: str) -> str:
        found = board[name]
        return (f"| {name} | {float(found['mean_dice']):.4f} | "
                + " | ".join(f"{float(found[f'{t}_dice_mean']):.4f}" for t in tissues) + " | "
                + " | ".join(f"{float(found[f'{t}_hd95_mean']):.2f}" for t in tissues) + f" | {training} |")

    for name in RUNS:
        lines.append(row(name, f"{iterations[name]} it, {minutes[name]:.1f} min"))
    for name, (members, _) in ENSEMBLES.items():
        total = sum(minutes[m] for m in members)
        lines.append(row(name, f"{total:.1f} min of its members ({seconds[name]:.0f} s to fuse)"))
    best_single = max(float(board[name]["mean_dice"]) for name in RUNS)
    best_ensemble = max(ENSEMBLES, key=lambda name: float(board[name]["mean_dice"]))
    lines.append("")
    lines.append(f"Best ensemble {best_ensemble}: {float(board[best_ensemble]['mean_dice']) - best_single:+.4f} mean "
                 f"Dice over the best single baseline; its members' training took "
                 f"{sum(minutes[m] for m in ENSEMBLES[best_ensemble][0]):.1f} min in all.")
    workspace = Workspace(ws)
    held_out = [(case.id, case.image, case.label) for case in workspace.cases("heldout")]
    for name, what in (("unet2d__dice_ce", "trained with left-right flips (the CPU default), mirrored left-right"),
                       ("unet2d_coronal__dice_ce", "trained without flips, mirrored on both in-plane axes")):
        means = mirroring_dice(ws / "baselines" / name, held_out)
        lines.append(f"Test-time mirroring, {name} ({what}): mean Dice {means[False].mean():.4f} without, "
                     f"{means[True].mean():.4f} with ({means[True].mean() - means[False].mean():+.4f}; "
                     + ", ".join(f"{t} {means[False][i]:.4f} -> {means[True][i]:.4f}" for i, t in enumerate(tissues))
                     + ").")
    return "\n".join(lines)


def write_section(text: str) -> None:
    readme = README.read_text()
    section = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in readme:
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, readme, flags=re.S)
    else:
        readme = readme.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ibsr-baseline-cpu"), help="the workspace")
    parser.add_argument("--phase", choices=("all", "train", "score"), default="all")
    parser.add_argument("--write", action="store_true", help="put the table into bench/README.md")
    args = parser.parse_args()
    if args.phase in ("all", "train"):
        train(args.out)
    if args.phase in ("all", "score"):
        table = score(args.out)
        print(table)
        if args.write:
            write_section(table)


if __name__ == "__main__":
    main()

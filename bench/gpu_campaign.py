"""The whole pipeline on one GPU in minutes: nnU-Net 2d and 3d_fullres against the four baselines on real IBSR18, in
one leaderboard, every model with a share of one fixed training budget, written into bench/GPU.md.

    python bench/gpu_install.py && python bench/gpu_campaign.py --budget 240     # one call of about 8-9 minutes
    python bench/gpu_campaign.py --source DIR --budget 240                       # another IBSR18 tree
    python bench/gpu_campaign.py --device cpu --smoke                            # the test suite's run (phantom)

Every step goes through the real command line (`python -m ibsr_nnunet`): `convert` and `plan` (2d, 3d_fullres) of
--source; `train` fold 0 of 2d and 3d_fullres; `ensemble --device D` (nnU-Net's best-configuration search over the
fold-0 models, then predictions of every held-out and test case with 2d, 3d_fullres and their ensemble); `baseline
train` of unet2d, resunet2d, denseunet2d and unet3d with dice_ce, then `baseline predict --device D`;
`leaderboard`; and `segment --model nnunet_ensemble --device D` of one Test_Set scan.

The training budget (--budget seconds) is shared out by fixed fractions (SHARES) and turned into each model's
schedule with fixed per-epoch costs measured on an H200 (bench/GPU.md: 7.5 s per 250-iteration 2d epoch and 21.9 s
per 3d_fullres epoch without torch.compile, whose 38-52 s start-up a short run cannot pay back), so a budget names
the same schedules on any machine: nnU-Net gets whole epochs of 250 iterations, the baselines `--minutes`. The
report gives each model's schedule, every step's wall time and the card's peak memory, and the leaderboard.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpu_check import SHARED_IBSR18, PeakMemory, Row, cli

REPO = Path(__file__).resolve().parents[1]
FULL_ITERATIONS = 250
EPOCH_SECONDS = {"2d": 7.5, "3d_fullres": 21.9}  # per 250-iteration epoch on an H200, --no-compile (bench/GPU.md)
RUN_OVERHEAD = 20.0  # seconds of a fold run that are not epochs: start-up, data loaders, the closing validation
BASELINES = ("unet2d", "resunet2d", "denseunet2d", "unet3d")
SHARES = {"2d": 0.25, "3d_fullres": 0.35, **{model: 0.10 for model in BASELINES}}  # of the training budget
BEGIN, END = "<!-- gpu_campaign: begin -->", "<!-- gpu_campaign: end -->"
LEADERBOARD_COLUMNS = ("rank", "model", "mean_dice", *(f"{t}_{m}_mean" for m in ("dice", "hd95", "avd")
                                                        for t in ("CSF", "GM", "WM")))


@dataclass(frozen=True)
class Schedule:
    """What one model trains for: epochs × iterations (nnU-Net) or minutes (a baseline), and its budget share."""

    model: str
    seconds: float
    epochs: int = 0
    iterations: int = 0
    minutes: float = 0.0

    @property
    def text(self) -> str:
        if self.epochs:
            return f"{self.epochs} epochs × {self.iterations} iterations ({self.seconds:.0f} s of the budget)"
        return f"{self.minutes:g} min ({self.seconds:.0f} s of the budget)"


def schedules(budget: float) -> dict[str, Schedule]:
    """The schedule of every model for a training budget of `budget` seconds (machine-independent: fixed shares and
    fixed per-epoch costs); nnU-Net gets at least one epoch."""
    if budget <= 0:
        raise ValueError(f"the budget must be positive, got {budget}")
    plan = {}
    for model, share in SHARES.items():
        seconds = budget * share
        if model in EPOCH_SECONDS:
            epochs = max(1, math.floor((seconds - RUN_OVERHEAD) / EPOCH_SECONDS[model]))
            plan[model] = Schedule(model, seconds, epochs=epochs, iterations=FULL_ITERATIONS)
        else:
            plan[model] = Schedule(model, seconds, minutes=round(seconds / 60, 2))
    return plan


def merged(existing: str, section: str) -> str:
    """GPU.md with its campaign section (between BEGIN and END) replaced by `section`, or `section` appended."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1].lstrip("\n")
    return (existing.rstrip() + "\n\n" if existing.strip() else "") + block


def leaderboard_table(csv: Path) -> list[str]:
    """The leaderboard as markdown rows (the columns of LEADERBOARD_COLUMNS it has), best first."""
    import pandas as pd

    board = pd.read_csv(csv)
    if "rank" in board:
        board = board.sort_values("rank")
    columns = [c for c in LEADERBOARD_COLUMNS if c in board]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in board.iterrows():
        lines.append("| " + " | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                                       for c in columns) + " |")
    return lines


def test_scan(source: Path, ws: Path) -> Path:
    """One Test_Set scan of the source tree (MISA: Test_Set/IBSR_XX/IBSR_XX.nii.gz), else a held-out image."""
    found = sorted((source / "Test_Set").glob("*/*.nii.gz")) if (source / "Test_Set").is_dir() else []
    found = [p for p in found if "_seg" not in p.name]
    return found[0] if found else sorted((ws / "nnUNet_raw").glob("*/imagesTs/*_0000.nii.gz"))[0]


def campaign(args: argparse.Namespace, root: Path, rows: list[Row], plan: dict[str, Schedule], write) -> None:
    ws, log, device = root / "ws", root / "gpu_campaign.log", args.device
    gpu = device == "cuda"

    def step(name: str, *cli_args: str) -> None:
        started = time.perf_counter()
        with PeakMemory(gpu) as memory:
            try:
                cli(ws, *cli_args, log=log)
                result = "done"
            except RuntimeError as err:  # reported in its row; the later steps still run where they can
                result = f"FAILED: {str(err).splitlines()[0]} (see the log)"
        rows.append(Row(name, result, time.perf_counter() - started, memory.text))
        write()

    step("convert", "convert", str(args.source))
    step("plan 2d + 3d_fullres", "plan", "--configs", "2d,3d_fullres")
    for config in ("2d", "3d_fullres"):
        s = plan[config]
        step(f"nnU-Net {config} fold 0: {'smoke' if args.smoke else s.text}", "train", "--fold", "0", "--config",
             config, "--epochs", str(s.epochs), "--iterations-per-epoch", str(s.iterations), "--device", device,
             "--no-compile", "--seed", "0")
    step("ensemble (best configuration, held-out + test predictions)", "ensemble", "--device", device)
    for model in BASELINES:
        s = plan[model]
        budget = (["--epochs", "1", "--iterations-per-epoch", "2", "--width", "4", "--patch-size", "32",
                   "--batch-size", "2"] if args.smoke else ["--minutes", str(s.minutes)])
        step(f"{model} dice_ce: {'smoke' if args.smoke else s.text}", "baseline", "train", "--model", model,
             "--loss", "dice_ce", *budget, "--device", device, "--seed", "0")
        step(f"{model} predict", "baseline", "predict", "--model", model, "--loss", "dice_ce", "--device", device)
    step("leaderboard", "leaderboard")
    scan = test_scan(Path(args.source), ws)
    step(f"segment {scan.name} with nnunet_ensemble", "segment", str(scan), "--output", str(root / "segmented"),
         "--model", "nnunet_ensemble", "--device", device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="a small phantom and tiny schedules (the test suite's)")
    parser.add_argument("--source", type=Path, help="an IBSR18 tree (default ../shared/data/ibsr18; smoke: phantom)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of training shared by all models")
    parser.add_argument("--out", type=Path, help="the report (default bench/GPU.md; smoke: beside the workspace)")
    parser.add_argument("--keep", type=Path, help="keep the workspace and log in this folder")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --smoke, or on a GPU machine")
    from ibsr_nnunet.core.atomic import write_text
    from ibsr_nnunet.core.runlog import cpu_name

    card = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    root = args.keep or Path(tempfile.mkdtemp(prefix="gpu_campaign_"))
    root.mkdir(parents=True, exist_ok=True)
    if args.source is None:
        args.source = root / "phantom" if args.smoke else SHARED_IBSR18
        if args.smoke and not args.source.exists():
            subprocess.run([sys.executable, "-m", "ibsr_nnunet", "phantom", str(args.source), "--size", "small"],
                           check=True, stdout=subprocess.DEVNULL)
    plan = schedules(args.budget)
    if args.smoke:
        plan = {**plan, "2d": Schedule("2d", 0, 1, 2), "3d_fullres": Schedule("3d_fullres", 0, 1, 2)}
    out = args.out or (root / "GPU.md" if args.smoke else REPO / "bench" / "GPU.md")
    rows: list[Row] = []
    started = time.perf_counter()

    def write(final: bool = False) -> None:
        lines = [f"## The whole pipeline in one call{' (smoke run: the numbers mean nothing)' if args.smoke else ''}",
                 "", f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
                 f"`bench/gpu_campaign.py --budget {args.budget:g}` on **{card}** ({args.device}; "
                 f"{os.cpu_count()} CPU cores), data: {args.source}; {time.perf_counter() - started:.0f} s so far"
                 f"{' (finished)' if final else ''}.", "",
                 ("Budgets (smoke run): nnU-Net 1 epoch × 2 iterations, baselines 1 epoch × 2 iterations of width 4."
                  if args.smoke else "Budgets: " + "; ".join(f"{m} {s.text}" for m, s in plan.items()) + "."), "",
                 "| step | result | wall s | peak GPU MiB |", "|---|---|---|---|"]
        lines += [f"| {r.step} | {r.result} | {r.seconds:.1f} | {r.peak_mib} |" for r in rows]
        board = root / "ws" / "leaderboard.csv"
        if board.is_file():
            lines += ["", "Leaderboard (held-out cases; nnU-Net fold 0 only):", ""] + leaderboard_table(board)
        write_text(out, merged(out.read_text() if out.is_file() else "", "\n".join(lines)))

    campaign(args, root, rows, plan, write)
    write(final=True)
    for row in rows:
        print(f"{row.step}: {row.result} ({row.seconds:.0f} s, {row.peak_mib} MiB)")
    print(f"wrote {out}; workspace and log: {root}")
    if any(r.result.startswith("FAILED") for r in rows):
        raise SystemExit("some steps failed: see the report's rows and the log")


if __name__ == "__main__":
    main()

"""GPU check: nnU-Net epoch times (2d, 3d_fullres; torch.compile timed apart), CUDA baseline iterations per second
and `segment --device cuda` on one real scan, written as a table to bench/GPU.md.

One call on one GPU, about 8 minutes; it keeps to --budget seconds by leaving out the steps it has no time for
(they are listed as skipped in the report):

    python bench/gpu_check.py                          # real IBSR18 beside the checkout (../shared/data/ibsr18)
    python bench/gpu_check.py --source DIR             # another IBSR18 tree (MISA layout)
    python bench/gpu_check.py --device cpu --smoke     # the test suite's run: a small phantom, tiny counts

Steps, each through the real command line (`python -m ibsr_nnunet`) except the baselines, which are timed in-process:
1. `convert` and `plan --configs 2d,3d_fullres`;
2. `train` fold 0 of 2d and 3d_fullres with --no-compile, and fold 1 with --compile, EPOCHS epochs of ITERATIONS
   iterations each (2d's compiled run comes after the baselines: the least needed number is measured last). Seconds
   per 250-iteration epoch = the median of the epochs after the first × 250/ITERATIONS
   (our trainer runs ITERATIONS/5 validation iterations per epoch, the same share as nnU-Net's 250/50). The compile
   cost is the first epoch's excess over the steady epochs, with compile minus without;
3. unet2d and unet3d (dice_ce), one epoch of BASELINE_ITERATIONS with the device's defaults and mixed precision:
   iterations per second from the median gap between training iterations after the first 10;
4. `segment --device D` of one scan with the unet2d run, and, when there is time, `ensemble` (2d + 3d_fullres on
   folds 0 and 1) then `segment --model nnunet_ensemble`.
Peak memory is the card's memory in use (nvidia-smi, CUDA context included), polled every 0.5 s during each step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
SHARED_IBSR18 = REPO.parent / "shared" / "data" / "ibsr18"
FULL_ITERATIONS = 250
EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


@dataclass
class Row:
    step: str
    result: str
    seconds: float = 0.0
    peak_mib: str = "n/a"


@dataclass
class Report:
    device: str
    gpu: str
    smoke: bool
    source: str
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        import torch

        versions = {"python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.version.cuda or "none"}
        for name in ("nnunetv2", "SimpleITK", "nibabel", "numpy"):
            try:
                from importlib.metadata import version
                versions[name] = version(name)
            except Exception:  # noqa: BLE001 - a missing version is reported as such
                versions[name] = "?"
        lines = [f"# GPU check{' (smoke run: the numbers mean nothing)' if self.smoke else ''}", "",
                 f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/gpu_check.py` "
                 f"on **{self.gpu}** ({self.device}; {os.cpu_count()} CPU cores), data: {self.source}.", "",
                 "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
                 "| step | result | wall s | peak GPU MiB |", "|---|---|---|---|"]
        lines += [f"| {r.step} | {r.result} | {r.seconds:.1f} | {r.peak_mib} |" for r in self.rows]
        if self.skipped:
            lines += ["", "Left out: " + "; ".join(self.skipped) + "."]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


class PeakMemory:
    """The card's peak memory in use while the block runs, from nvidia-smi every 0.5 s (n/a without one)."""

    def __init__(self, active: bool):
        self.active = active and shutil.which("nvidia-smi") is not None
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, check=False)
            values = [int(v) for v in done.stdout.split() if v.strip().isdigit()]
            if values:
                self.peak = max(self.peak, values[0])
            self._stop.wait(0.5)

    def __enter__(self) -> "PeakMemory":
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.active:
            self._thread.join()

    @property
    def text(self) -> str:
        return str(self.peak) if self.active else "n/a"


def cli(workspace: Path, *args: str, log: Path) -> float:
    """Run `python -m ibsr_nnunet --workspace WS ARGS`, its output appended to `log`; seconds, or exit on failure."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ ibsr-nnunet {' '.join(args)}\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(workspace), *args],
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"`ibsr-nnunet {' '.join(args)}` exited {done.returncode}; end of {log}:\n{tail}")
    return time.perf_counter() - started


def epoch_seconds(fold_folder: Path) -> list[float]:
    """nnU-Net's "Epoch time" of every epoch of the newest training log of a fold."""
    logs = sorted(fold_folder.glob("training_log_*.txt"))
    if not logs:
        raise RuntimeError(f"no training log in {fold_folder}")
    return [float(m[1]) for m in EPOCH_TIME.finditer(logs[-1].read_text(errors="replace"))]


def first_and_steady(times: list[float]) -> tuple[float, float]:
    """(first epoch, median of the later ones) seconds."""
    if len(times) < 2:
        raise RuntimeError(f"need at least 2 epochs to tell warm-up from steady state, got {times}")
    return times[0], statistics.median(times[1:])


def iterations_per_second(stamps: list[float], skip: int = 10) -> float:
    """1 / the median gap between consecutive iterations after the first `skip` (warm-up, cudnn autotuning);
    the median leaves out the few long gaps that validation makes."""
    gaps = [b - a for a, b in zip(stamps[skip:], stamps[skip + 1:])]
    if not gaps:
        raise RuntimeError(f"too few iterations ({len(stamps)}) to time")
    return 1.0 / statistics.median(gaps)


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds <= self.deadline


def check(args: argparse.Namespace, report: Report, root: Path, write) -> None:
    from ibsr_nnunet.core.workspace import Workspace
    from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name

    ws_root, log = root / "ws", root / "gpu_check.log"
    budget = Budget(args.budget)
    device = args.device
    gpu = device == "cuda"

    def step(name: str, *cli_args: str, required: bool = False) -> Optional[Row]:
        """Run one command; a failure of a step that is not required is reported in its row (None), and the check
        goes on: one GPU call must bring back everything that worked."""
        started = time.perf_counter()
        with PeakMemory(gpu) as memory:
            try:
                seconds = cli(ws_root, *cli_args, log=log)
            except RuntimeError as err:
                if required:
                    raise
                report.rows.append(Row(name, f"FAILED: {str(err).splitlines()[0]} (see the log)",
                                       time.perf_counter() - started, memory.text))
                write()
                return None
        row = Row(name, "done", seconds, memory.text)
        report.rows.append(row)
        return row  # the caller fills in the result, then writes

    step("convert", "convert", str(args.source), required=True)
    step("plan 2d + 3d_fullres", "plan", "--configs", "2d,3d_fullres", required=True)

    write()
    ws = Workspace.open(ws_root)
    name = trainer_name(args.epochs, args.iterations)
    scale = FULL_ITERATIONS / args.iterations
    steady: dict[tuple[str, bool], tuple[float, float]] = {}
    # estimated seconds each training run may take, to stop before the budget runs out (generous on a GPU)
    train_estimate = {"2d": 60.0, "3d_fullres": 90.0} if gpu else {"2d": 0.0, "3d_fullres": 0.0}

    def train(configuration: str, compiled: bool) -> None:
        fold = 1 if compiled else 0
        label = f"nnU-Net {configuration} {'--compile' if compiled else '--no-compile'}"
        if not budget.allows(train_estimate[configuration] * (2 if compiled else 1)):
            report.skipped.append(f"{label} (no time left)")
            return
        row = step(label, "train", "--fold", str(fold), "--config", configuration, "--epochs", str(args.epochs),
                   "--iterations-per-epoch", str(args.iterations), "--device", device,
                   "--compile" if compiled else "--no-compile")
        if row is None:
            return
        first, median = first_and_steady(epoch_seconds(fold_folder(ws, configuration, fold, trainer=name)))
        steady[(configuration, compiled)] = (first, median)
        row.result = (f"**{median * scale:.1f} s** per 250-iteration epoch (median of epochs 2-{args.epochs} of "
                      f"{args.iterations} iterations: {median:.2f} s); first epoch {first:.2f} s")
        write()

    # the order puts what matters most first: 3d_fullres's compile cost (its jobs are the long ones) before the
    # baselines, 2d's compile cost after them
    train("2d", False)
    train("3d_fullres", False)
    if gpu or not args.smoke:  # nnU-Net never compiles on CPU: a smoke run there leaves the pair with --compile out
        train("3d_fullres", True)
    trained = baselines(args, report, ws, budget, write)
    if gpu or not args.smoke:
        train("2d", True)
    for configuration in ("2d", "3d_fullres"):
        if (configuration, False) in steady and (configuration, True) in steady:
            report.notes.append(compile_note(configuration, steady[(configuration, False)],
                                             steady[(configuration, True)], scale))
            write()
        elif not gpu:
            report.skipped.append(f"nnU-Net {configuration} --compile (nnU-Net never compiles on CPU)")
    scan = segment_scan(Path(args.source))
    out = root / "segmented"
    if "unet2d" in trained:
        row = step(f"segment 1 scan, unet2d__dice_ce, {device}", "segment", str(scan), "--output", str(out / "unet2d"),
                   "--model", "unet2d__dice_ce", "--device", device, "--no-qc")
        if row is not None:
            row.result = f"{scan.name}: {row.seconds:.1f} s for the whole command (start-up included)"
            write()
    folds_ready = all((c, x) in steady for c in ("2d", "3d_fullres") for x in (False, True))
    if folds_ready and not args.smoke and budget.allows(150.0 if gpu else 0.0):
        row = step(f"ensemble (2d + 3d_fullres, folds 0-1, imagesTs), {device}", "ensemble", "--device", device)
        if row is not None:
            row.result = "searched, predicted and postprocessed every held-out and test case"
            write()
            row = step(f"segment 1 scan, nnunet_ensemble, {device}", "segment", str(scan), "--output",
                       str(out / "ensemble"), "--model", "nnunet_ensemble", "--device", device, "--no-qc")
        if row is not None:
            row.result = f"{scan.name}: {row.seconds:.1f} s for the whole command (start-up included)"
            write()
    else:
        why = "smoke run" if args.smoke else ("no time left" if folds_ready else "folds missing")
        report.skipped.append(f"ensemble + segment with nnunet_ensemble ({why})")
        write()


def compile_note(configuration: str, without: tuple[float, float], with_compile: tuple[float, float],
                 scale: float) -> str:
    """What torch.compile costs and buys, from (first, steady) epoch seconds without and with it: the cost is the
    first epoch's excess over the steady ones, with compile minus without (both pay cudnn's and the loaders'
    warm-up)."""
    (f0, s0), (f1, s1) = without, with_compile
    cost = (f1 - s1) - (f0 - s0)
    if s1 >= s0:
        return (f"{configuration}: torch.compile costs {cost:.1f} s once per run and makes steady epochs no faster "
                f"({s1 * scale:.1f} s vs {s0 * scale:.1f} s per 250 iterations)")
    saved = (s0 - s1) * scale  # seconds saved per full epoch
    return (f"{configuration}: torch.compile costs {cost:.1f} s once per run; steady epochs {s0 / s1:.2f}x as fast "
            f"({s1 * scale:.1f} s vs {s0 * scale:.1f} s per 250 iterations); it pays for itself after "
            f"{max(cost, 0.0) / saved:.1f} full epochs of a run")


def segment_scan(source: Path) -> Path:
    """A scan to segment: the first of the Test_Set, else the first image of the tree."""
    images = sorted(p for p in source.rglob("*.nii*") if "_seg" not in p.name and not p.name.startswith("."))
    tests = [p for p in images if "Test" in str(p)]
    if not (tests or images):
        raise RuntimeError(f"no image under {source}")
    return (tests or images)[0]


def baselines(args: argparse.Namespace, report: Report, ws, budget: Budget, write) -> list[str]:
    """Train unet2d and unet3d for --baseline-seconds each; the models trained."""
    from baselines.options import TrainOptions, device_defaults
    from baselines.workspace import train_in_workspace

    trained = []
    for model in ("unet2d", "unet3d"):
        if not budget.allows(60.0 if args.device == "cuda" else 0.0):
            report.skipped.append(f"{model} baseline (no time left)")
            continue
        stamps: list[float] = []
        options = TrainOptions(**{**device_defaults(args.device, model=model), "model": model, "loss": "dice_ce",
                                  "epochs": 1, "iterations_per_epoch": args.baseline_iterations, "device": args.device,
                                  "seed": 0, "val_cases": 1, "amp": True})
        started = time.perf_counter()
        label = f"{model} dice_ce, {args.device}, mixed precision"
        with PeakMemory(args.device == "cuda") as memory:
            try:
                result = train_in_workspace(ws, options, on_iteration=lambda: stamps.append(time.perf_counter()),
                                            say=lambda _: None)
                if result.status != "finished":
                    raise RuntimeError(f"{result.status} in {result.folder}: nothing to time (use a new --keep)")
                rate = iterations_per_second(stamps)
            except Exception as err:  # noqa: BLE001 - reported in the row; the other steps still run
                report.rows.append(Row(label, f"FAILED: {type(err).__name__}: {err}", time.perf_counter() - started,
                                       memory.text))
                write()
                continue
        seconds = time.perf_counter() - started
        report.rows.append(Row(
            label, f"**{rate:.2f} it/s** (batch {options.batch_size}, "
            f"patch {options.patch_size}, width {options.width}); {len(stamps)} iterations, "
            f"{result.epochs_done} epochs",
            seconds, memory.text))
        trained.append(model)
        write()
    return trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="a small phantom and tiny counts (the test suite's run)")
    parser.add_argument("--source", type=Path, help="an IBSR18 tree (default: ../shared/data/ibsr18; smoke: a phantom)")
    parser.add_argument("--epochs", type=int, help="epochs per nnU-Net run (default 3; smoke 2)")
    parser.add_argument("--iterations", type=int, help="iterations per epoch (default 50; smoke 2)")
    parser.add_argument("--baseline-iterations", type=int,
                        help="training iterations per baseline, one epoch (default 300; smoke 14)")
    parser.add_argument("--budget", type=float, help="seconds; steps that would overrun it are left out (default 480 "
                        "on a GPU, none in a smoke run)")
    parser.add_argument("--out", type=Path, help="the report (default bench/GPU.md; smoke: beside the workspace)")
    parser.add_argument("--keep", type=Path, help="keep the workspace and log in this folder (default: a temp folder)")
    args = parser.parse_args()
    args.epochs = args.epochs or (2 if args.smoke else 3)
    args.iterations = args.iterations or (2 if args.smoke else 50)
    args.baseline_iterations = args.baseline_iterations or (14 if args.smoke else 300)
    if args.baseline_iterations < 12:
        parser.error("--baseline-iterations must be at least 12 (the first 10 are warm-up)")
    args.budget = args.budget or (float("inf") if args.smoke else 480.0)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --smoke, or on a GPU machine")
    from ibsr_nnunet.core.atomic import write_text
    from ibsr_nnunet.core.runlog import cpu_name

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    root = args.keep or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    root.mkdir(parents=True, exist_ok=True)
    if args.source is None:
        if args.smoke:
            args.source = root / "phantom"
            if not args.source.exists():
                subprocess.run([sys.executable, "-m", "ibsr_nnunet", "phantom", str(args.source), "--size", "small"],
                               check=True, stdout=subprocess.DEVNULL)
        else:
            args.source = SHARED_IBSR18
    out = args.out or (root / "GPU.md" if args.smoke else REPO / "bench" / "GPU.md")
    report = Report(args.device, gpu, args.smoke, str(args.source if args.smoke or args.source != SHARED_IBSR18
                                                      else "the real IBSR18 (MISA Training_Set + Test_Set)"))

    shown = 0

    def write() -> None:
        nonlocal shown
        write_text(out, report.markdown())
        for row in report.rows[shown:]:
            print(f"{row.step}: {row.result} ({row.seconds:.0f} s)", flush=True)
        shown = len(report.rows)

    started = time.perf_counter()
    try:
        check(args, report, root, write)
    except Exception as err:  # noqa: BLE001 - the report says where it stopped, then the error propagates
        report.notes.append(f"stopped by an error: {str(err).splitlines()[0]}")
        write()
        raise
    report.notes.append(f"the whole check took {time.perf_counter() - started:.0f} s; workspace and log: {root}")
    write()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

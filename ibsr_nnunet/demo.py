"""The whole pipeline in one go, each step through the real command line: the demo a newcomer runs first."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from baselines.registry import MODELS as BASELINES

from .core.errors import InputError
from .core.workspace import Workspace


@dataclass(frozen=True)
class Budget:
    """How long each model trains: tiny on the phantom (CPU, minutes), longer on a real IBSR18 tree."""

    epochs: int
    iterations: int
    folds: tuple[int, ...] = (0, 1)
    configurations: tuple[str, ...] = ("2d", "3d_fullres")
    baseline_epochs: Optional[int] = None
    baseline_minutes: Optional[float] = None
    baseline_iterations: Optional[int] = None
    baseline_loss: str = "dice_ce"
    baseline_models: tuple[str, ...] = BASELINES
    baseline_options: tuple[str, ...] = ()  # option-value pairs, e.g. a narrower network and smaller patches
    model_options: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (baseline, pairs that replace shared ones)
    seed: int = 0  # nnU-Net's folds are seeded, so a second demo shows the first one's numbers


# phantom volumes are 64×32×64: 32-voxel patches and narrow networks keep every baseline to seconds on 2 cores;
# in 160 iterations Adam's CPU default (0.003) leaves a narrow network predicting no CSF, 0.01 learns it.
# The demo's 6 minutes on 2 cores: one fold per configuration, which shows every step (the ensemble, the search,
# the cross-validation column) as well as two; 3 epochs × 10 iterations of nnU-Net, where a 3d_fullres iteration
# costs about 1.7 s (its 28×40×40 patches, batch 2); unet3d with batches of 2 patches instead of 4.
SYNTHETIC = Budget(epochs=3, iterations=10, folds=(0,), baseline_epochs=8, baseline_iterations=20,
                   baseline_options=("--width", "8", "--patch-size", "32", "--batch-size", "4", "--lr", "0.01"),
                   model_options=(("unet3d", ("--batch-size", "2")),))
# 5 held-out phantom cases (MISA Validation_Set), the fewest for which the leaderboard reports intervals;
# with 5 to train and 2 to test that makes 12 subjects
PHANTOM_SUBJECTS = 12
PHANTOM_HELD_OUT = 5
# a real tree: 1000 iterations per baseline, the size of the 2D CPU default: the same models on any machine
REAL = Budget(epochs=20, iterations=50, baseline_epochs=5, baseline_iterations=200)


@dataclass
class Step:
    name: str
    args: list[str]
    seconds: float = 0.0
    log: Optional[Path] = None


@dataclass
class DemoResult:
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0


def steps(source: Path, budget: Budget, *, device: str, jobs: int) -> list[Step]:
    """Every command of the pipeline, in order, exactly as a user would type them."""
    pipeline = [Step("convert", ["convert", str(source), "--jobs", str(jobs)]),
                Step("plan", ["plan", "--configs", ",".join(budget.configurations), "--jobs", str(jobs)])]
    for configuration in budget.configurations:
        for fold in budget.folds:
            pipeline.append(Step(f"train {configuration} fold {fold}", [
                "train", "--fold", str(fold), "--config", configuration, "--epochs", str(budget.epochs),
                "--iterations-per-epoch", str(budget.iterations), "--device", device, "--seed", str(budget.seed)]))
    pipeline.append(Step("ensemble", ["ensemble", "--device", device, "--jobs", str(jobs)]))
    for model in budget.baseline_models:
        limits = []
        if budget.baseline_epochs:
            limits += ["--epochs", str(budget.baseline_epochs)]
        if budget.baseline_minutes:
            limits += ["--minutes", str(budget.baseline_minutes)]
        if budget.baseline_iterations:
            limits += ["--iterations-per-epoch", str(budget.baseline_iterations)]
        options = dict(zip(budget.baseline_options[::2], budget.baseline_options[1::2]))
        own = dict(budget.model_options).get(model, ())
        options.update(zip(own[::2], own[1::2]))
        # a fixed thread count: the baselines' default picks one by timing, which shared cores make vary between demos
        pipeline.append(Step(f"baseline {model}", ["baseline", "train", "--model", model, "--loss",
                                                   budget.baseline_loss, "--device", device, "--threads", str(jobs),
                                                   *limits, *(part for pair in options.items() for part in pair)]))
        pipeline.append(Step(f"predict {model}", ["baseline", "predict", "--model", model, "--loss",
                                                  budget.baseline_loss, "--device", device]))
    pipeline.append(Step("leaderboard", ["leaderboard", "--jobs", str(jobs)]))
    return pipeline


def budget_for(source: Optional[Path], *, epochs: Optional[int] = None, iterations: Optional[int] = None,
               baseline_minutes: Optional[float] = None) -> Budget:
    """The phantom's or a real tree's budget, with the user's overrides (a minutes budget replaces the epochs one)."""
    overrides = {k: v for k, v in {"epochs": epochs, "iterations": iterations,
                                   "baseline_minutes": baseline_minutes}.items() if v is not None}
    if baseline_minutes is not None:
        overrides["baseline_epochs"] = None
    return dataclasses.replace(REAL if source else SYNTHETIC, **overrides)


def run_demo(ws: Workspace, source: Optional[Path], budget: Budget, *, device: str = "auto", jobs: int = 1,
             on_step: Callable[[Step, int, int], None] = lambda step, i, n: None) -> DemoResult:
    """Write the phantom (unless a real `source` is given), then run every step; stop at the first failure."""
    from .data.phantom import write_phantoms

    started = time.perf_counter()
    if source is not None and not Path(source).is_dir():
        raise InputError(f"--source {source} is not a folder; pass the IBSR18 tree (e.g. the folder holding "
                         f"Training_Set), or leave --source out for the embedded phantom.")
    ws.ensure_writable()
    if source is None:
        source = ws.root / "demo-source"
        if not source.is_dir():  # re-running the demo reuses it, so convert and the trained folds stay up to date
            write_phantoms(source, PHANTOM_SUBJECTS, layout="misa", size="demo", seed=0, validation=PHANTOM_HELD_OUT)
    logs = ws.root / "demo-logs"
    logs.mkdir(exist_ok=True)
    result = DemoResult()
    pipeline = steps(source, budget, device=device, jobs=jobs)
    for index, step in enumerate(pipeline):
        on_step(step, index, len(pipeline))
        step.log = logs / f"{index:02d}-{step.name.replace(' ', '-')}.log"
        begin = time.perf_counter()
        with open(step.log, "w") as log:
            log.write(f"$ ibsr-nnunet {' '.join(step.args)}\n")
            log.flush()
            done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws.root), *step.args],
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "160"})
        step.seconds = time.perf_counter() - begin
        result.steps.append(step)
        if done.returncode != 0:
            tail = " ".join(step.log.read_text(errors="replace").strip().splitlines()[-1:])[:300]
            raise InputError(f"demo step `ibsr-nnunet {' '.join(step.args)}` failed with exit code "
                             f"{done.returncode} ({tail}); its whole output is in {step.log}.")
    result.seconds = time.perf_counter() - started
    return result

"""What every stage's commands share (a leaf: it imports no other command module): the consoles, the refusal
wrapper, progress bars, the workspace, the choices built from each registry, and comma-separated list options."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Iterable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from baselines.registry import (
    BASELINE_FORM,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
    VIEW_CHOICES,
    VOTES,
    baseline_problem,
)

from ..core.devices import DEVICES
from ..core.environment import available_cores
from ..core.errors import InputError
from ..core.exitcodes import EXIT_INTERRUPTED
from ..core.tracking import EXTRA as TRACKING_EXTRA
from ..core.vocabulary import CONFIGURATIONS, N_FOLDS, PHANTOM_SIZES, PRESETS
from ..core.workspace import WORKSPACE_ENV, Workspace
from ..data.layouts import LAYOUTS
from ..nnunet.plan import PLANNABLE

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def choice(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of a registry's values: Typer lists them in --help and refuses anything else."""
    return Enum(name, {value: value for value in values}, type=str)


Device = choice("Device", DEVICES)
Configuration = choice("Configuration", CONFIGURATIONS)
PresetChoice = choice("PresetChoice", PRESETS)
Layout = choice("Layout", LAYOUTS)
SourceLayout = choice("SourceLayout", ("auto", *LAYOUTS))
PhantomSize = choice("PhantomSize", PHANTOM_SIZES)
BaselineModel = choice("BaselineModel", MODELS)
View = choice("View", VIEW_CHOICES)
Vote = choice("Vote", VOTES)
Loss = choice("Loss", LOSSES)
Optimizer = choice("Optimizer", OPTIMIZERS)
Schedule = choice("Schedule", SCHEDULES)


def comma_list(valid: Callable[[str], bool], option: str, known: str, *, allow_empty: bool = False):
    """The one callback of every comma-separated option (`--configs 2d,3d_fullres`, `--folds`, `--baselines`): splits
    `a,b,c`, refuses an item `valid` rejects (listing what is `known`), and returns a tuple."""
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
        if not items and not allow_empty:
            raise typer.BadParameter(f"give at least one of {known}.", param_hint=option)
        for item in items:
            if not valid(item):
                raise typer.BadParameter(f"{item!r} is not one of {known}.", param_hint=option)
        return items
    return parse


configs_list = comma_list(lambda c: c in PLANNABLE, "--configs", ", ".join(PLANNABLE))
configs_or_none = comma_list(lambda c: c in PLANNABLE, "--configs", ", ".join(PLANNABLE), allow_empty=True)
ALL_FOLDS = ",".join(map(str, range(N_FOLDS)))
folds_list = comma_list(lambda f: f.isdigit() and int(f) < N_FOLDS, "--folds", ", ".join(ALL_FOLDS.split(",")))
baselines_list = comma_list(lambda name: baseline_problem(name) is None, "--baselines", BASELINE_FORM,
                            allow_empty=True)

# options that several commands share, spelled once
DeviceOption = Annotated[Device, typer.Option(
    "--device", help="Where to compute: auto (cuda when torch sees a GPU), cuda or cpu.")]
ArchiveStaleOption = Annotated[bool, typer.Option(
    "--archive-stale", help="Move a run made from another dataset to <workspace>/stale/<time>/ and start afresh.")]
JobsOption = Annotated[int, typer.Option("--jobs", min=0, help="Parallel processes (0 = all available cores).")]
TrackOption = Annotated[Optional[str], typer.Option(
    "--track", help=f"Log every epoch to Weights & Biases: wandb (needs `{TRACKING_EXTRA}`); a resumed or requeued "
                    f"run continues the same W&B run.")]
TrackModeOption = Annotated[str, typer.Option(
    "--track-mode", help="offline (files in the run folder's wandb/, uploaded later with `wandb sync`: compute "
                         "nodes often have no internet) or online.")]
TrackProjectOption = Annotated[str, typer.Option("--track-project", help="The W&B project.")]
PresetOption = Annotated[PresetChoice, typer.Option(
    "--preset", help="nnU-Net's plans: default (nnUNetPlans) or a residual-encoder preset resenc-m|l|xl (plan it "
                     "first with `plan --presets`).")]
PresetsOption = Annotated[str, typer.Option(
    "--presets", help=f"nnU-Net plans presets, comma-separated: {', '.join(PRESETS)} (ResEnc M, L, XL are sized "
                      f"for 8, 24 and 40 GB of GPU memory).")]

def cores(jobs: int) -> int:
    """--jobs N, or every core this process may use when it is 0."""
    return jobs or available_cores()


def refusals(command):
    """The one place a command's errors become exit codes: an error of core/errors.py's family is its one sentence
    on stderr and its `exit_code` (1 refused, 73 locked, 75 requeue me, 76 stalled); Ctrl-C is one line and
    EXIT_INTERRUPTED."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as err:
            label = f"[bold red]{err.label}:[/] " if err.label else ""
            errors.print(f"{label}{escape(str(err))}", soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            errors.print("interrupted (Ctrl-C): stopped where it was; what was saved stays, and running the same "
                         "command again resumes or redoes the rest.", soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return wrapper


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def workspace_of(ctx: typer.Context, dataset_id: Optional[int] = None) -> Workspace:
    """The workspace named by the root --workspace option, with nnU-Net's path variables exported for this process."""
    ws = Workspace.open(ctx.obj["workspace"], dataset_id)
    ws.export_env()
    return ws


def stage_app(help_text: str) -> typer.Typer:
    """One stage's Typer app; the root app takes its commands."""
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def number(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


WorkspaceOption = Annotated[Optional[Path], typer.Option(
    "--workspace", envvar=WORKSPACE_ENV, help="Folder that holds everything (default ./ibsr-workspace).")]

"""The one module that renders sbatch text: the templates in `slurm/` filled from resources and job parameters.

The templates travel as package data (`ibsr_nnunet.campaign.templates`, mapped onto the checkout's `slurm/` folder
by pyproject.toml, so there is one copy of each) and are read with importlib.resources, installed or editable.
Everything here is a pure function of its arguments (the templates are read, nothing else is touched):
the same inputs give byte-identical scripts, which the golden files in tests/golden pin. Every value that reaches
bash is either checked against a strict pattern (configuration, model, numbers) or passed through `shlex.quote`
(workspace path, command prefix, trainer name, scratch folder); paths never go into `#SBATCH` lines (the log path
travels as an argument of the sbatch command line, see `sbatch_argv`). The one exception is `setup`: shell lines
the user writes (`module load ...`), rendered verbatim because running them is their purpose.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, fields, replace
from importlib import resources as package_data
from pathlib import Path
from typing import Any, Optional, Sequence

from baselines.registry import THICKEST, baseline_name

from ..core.errors import InputError
from ..core.exitcodes import EXIT_LOCKED, EXIT_REQUEUE, EXIT_STALLED
from ..core.tracking import DEFAULT_PROJECT, MODES, PROJECT, TOOLS, Tracking
from ..nnunet.presets import DEFAULT, Preset

TEMPLATE_PACKAGE = "ibsr_nnunet.campaign.templates"  # the checkout's slurm/ folder
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:,+@/=-]+")  # partition, account, time, mem: no blanks, quotes or $
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # configuration, model, loss, device, trainer
DEFAULT_SIGNAL_GRACE = 600
DEFAULT_MAX_RESTARTS = 50


SLURM_TIME = re.compile(r"(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                        r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)|(?P<mm>\d+)(?::(?P<ss>\d+))?)")


def slurm_seconds(text: str) -> Optional[int]:
    """Seconds of a SLURM time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS); None when it is not one."""
    match = SLURM_TIME.fullmatch(text.strip())
    if not match:
        return None
    g = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    if match["days"] is not None:
        return ((g["days"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
    if match["h"] is not None:
        return (g["h"] * 60 + g["m"]) * 60 + g["s"]
    return g["mm"] * 60 + g["ss"]


def _whole(minimum: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _text(v) -> bool:
    return isinstance(v, str) and SAFE_VALUE.fullmatch(v) is not None


# one rule per setting, the same for command-line options and --config-file keys: (check, what is expected)
RULES = {
    "partition": (_text, "a name of letters, digits and . : , + @ / = - (no blanks, quotes or $)"),
    "account": (_text, "a name of letters, digits and . : , + @ / = - (no blanks, quotes or $)"),
    "time": (lambda v: isinstance(v, str) and SLURM_TIME.fullmatch(v) is not None,  # as written: no blanks
             "a SLURM time such as 24:00:00, 1-00:00:00 or 90 (minutes), without blanks or line breaks"),
    "gpus_per_job": (_whole(0), "a whole number of GPUs, 0 or more (0 = no GPU request)"),
    "gpu_option": (lambda v: v in ("gres", "gpus"), "gres (--gres=gpu:N) or gpus (--gpus=N)"),
    "cpus_per_task": (_whole(1), "a whole number of CPUs, 1 or more"),
    "mem": (_text, "a SLURM memory size such as 32G"),
    "signal_grace": (_whole(60), "whole seconds, at least 60 (SLURM sends the signal on a ~60 s tick)"),
    "extra_sbatch": (lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
                     'a list of sbatch options, e.g. ["--qos=long"]'),
    "setup": (lambda v: isinstance(v, tuple) and all(isinstance(x, str) and not any(c in x for c in "\n\r\0")
                                                     for x in v),
              'a list of single shell lines, e.g. ["module load cuda/12.4"] (no line may hold a newline)'),
    "max_restarts": (_whole(0), "a whole number of requeues, 0 or more"),
    "array_parallel": (_whole(1), "a whole number of array tasks running at once, 1 or more"),
    "stage_data": (lambda v: isinstance(v, bool), "true or false"),
    "local_scratch": (lambda v: isinstance(v, str) and v.startswith("/") and not any(c in v for c in "\n\r\0"),
                      "an absolute folder on each node's local disk, e.g. /local/scratch"),
    "seed": (_whole(0), "a whole number, 0 or more"),
    "gpu_memory": (_whole(1), "whole GB of memory of each GPU, e.g. 24"),
    "track": (lambda v: v in TOOLS, f"{' or '.join(TOOLS)} (the experiment tracker)"),
    "track_mode": (lambda v: v in MODES, " or ".join(MODES)),
    "track_project": (lambda v: isinstance(v, str) and PROJECT.fullmatch(v) is not None,
                      "a W&B project name of letters, digits and _ . -"),
}
LISTS = ("extra_sbatch", "setup")  # settings given as repeated options or TOML lists


def check_setting(key: str, value: Any, origin: str) -> None:
    """Refuse a resource setting that breaks its rule, naming where it came from, the key, the value and the rule."""
    check, expected = RULES[key]
    if not check(value):
        raise InputError(f"{origin}: {key} = {value!r} is refused; expected {expected}.")


@dataclass(frozen=True)
class Resources:
    """What every job asks SLURM for; from `submit` options over a config file over these defaults."""

    partition: Optional[str] = None
    account: Optional[str] = None
    time: Optional[str] = None  # e.g. 24:00:00; none: the partition's default limit
    gpus_per_job: int = 1  # 0 = CPU-only cluster: no GPU line at all
    gpu_option: str = "gres"  # gres -> --gres=gpu:N ; gpus -> --gpus=N
    cpus_per_task: int = 8
    mem: Optional[str] = None  # e.g. 32G
    signal_grace: int = DEFAULT_SIGNAL_GRACE  # seconds before the time limit that USR1 arrives
    extra_sbatch: tuple[str, ...] = ()  # further `#SBATCH` lines, e.g. "--constraint=a100" or "--qos=long"
    setup: tuple[str, ...] = ()  # shell lines run first in every job, e.g. "module load cuda/12.4" (trusted: verbatim)
    max_restarts: int = DEFAULT_MAX_RESTARTS  # requeues a training job may ask for; then it ends FAILED
    array_parallel: Optional[int] = None  # array tasks running at once (--array=...%N); none: no throttle
    stage_data: bool = False  # nnU-Net folds copy the preprocessed data to node-local disk first
    local_scratch: Optional[str] = None  # node-local folder for --stage-data; none: $SLURM_TMPDIR, then $TMPDIR
    seed: Optional[int] = None  # nnU-Net folds train seeded (`train --seed`); none: unseeded
    gpu_memory: Optional[int] = None  # GB of each GPU: presets sized for more are refused; none: not checked
    track: Optional[str] = None  # every training job logs to this tracker (`train --track`); none: untracked
    track_mode: Optional[str] = None  # none: offline
    track_project: Optional[str] = None  # none: core.tracking.DEFAULT_PROJECT

    def __post_init__(self) -> None:
        for line in self.setup if isinstance(self.setup, tuple) else ():
            if isinstance(line, str) and any(c in line for c in "\n\r\0"):
                raise InputError(f"--setup {line!r} holds a line break; give each shell line as its own --setup.")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                check_setting(f.name, value, f"--{f.name.replace('_', '-')}")
        for line in self.extra_sbatch:
            extra_sbatch_line(line)
        if (self.track_mode or self.track_project) and not self.track:
            raise InputError("--track-mode and --track-project need --track wandb; add it or leave them out.")
        limit = slurm_seconds(self.time) if self.time else None
        if limit is not None and self.signal_grace >= limit:
            raise InputError(f"--signal-grace {self.signal_grace} s is not less than --time {self.time} ({limit} s): "
                             f"every run would be told to save before it could train; give a smaller grace or a "
                             f"longer time.")

    @property
    def tracking(self) -> Tracking:
        return Tracking(self.track, self.track_mode or MODES[0], self.track_project or DEFAULT_PROJECT)

    def sbatch_lines(self, training: bool = True) -> list[str]:
        """The `#SBATCH` lines of these resources (the training-only ones are in the templates themselves)."""
        options = []
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.account:
            options.append(f"--account={self.account}")
        if self.time:
            options.append(f"--time={self.time}")
        options.append(f"--cpus-per-task={self.cpus_per_task}")
        if self.mem:
            options.append(f"--mem={self.mem}")
        if self.gpus_per_job:
            options.append(f"--gres=gpu:{self.gpus_per_job}" if self.gpu_option == "gres"
                           else f"--gpus={self.gpus_per_job}")
        options.extend(extra_sbatch_line(line) for line in self.extra_sbatch)
        return [f"#SBATCH {option}" for option in options]


def extra_sbatch_line(line: str) -> str:
    """An extra `#SBATCH` option as given ('--qos=long' or '#SBATCH --qos=long'), reduced to the option."""
    option = line.strip()
    if option.startswith("#SBATCH"):
        option = option[len("#SBATCH"):].strip()
    if not option.startswith("-") or any(c in option for c in "\n\r\0"):
        raise InputError(f"--extra-sbatch {line!r} is not one sbatch option; give it like --qos=long.")
    return option


RESOURCE_KEYS = {f.name for f in fields(Resources)}


def load_config_file(path: Path) -> dict[str, Any]:
    """Resource settings from a TOML file: top-level keys or a [slurm] table, named like the Resources fields
    (partition, account, time, gpus_per_job, gpu_option, cpus_per_task, mem, signal_grace, extra_sbatch, setup,
    max_restarts, array_parallel, stage_data, local_scratch, seed, gpu_memory, track, track_mode, track_project)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise InputError(f"--config-file {path}: cannot be read as TOML ({err}); fix it or leave it out.") from None
    data = data.get("slurm", data)
    settings = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(settings) - RESOURCE_KEYS)
    if unknown:
        raise InputError(f"--config-file {path}: unknown keys {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(RESOURCE_KEYS))}.")
    for key in LISTS:
        if isinstance(settings.get(key), (str, list)):
            value = settings[key]
            settings[key] = tuple([value] if isinstance(value, str) else value)
    for key, value in settings.items():
        check_setting(key, value, f"--config-file {path}")
    return settings


def resources_from(config_file: Optional[Path] = None, **options: Any) -> Resources:
    """Defaults, then the config file, then every option that was given (not None / not empty)."""
    settings: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for key, value in options.items():
        if key not in RESOURCE_KEYS:
            raise TypeError(key)
        if value is None or (key in LISTS and not value):
            continue
        settings[key] = tuple(value) if key in LISTS else value
    try:
        return replace(Resources(), **settings)
    except TypeError as err:
        raise InputError(f"resource settings are malformed ({err}).") from None


# ---- rendering ----------------------------------------------------------------------------------------------------

def load_template(name: str) -> str:
    return package_data.files(TEMPLATE_PACKAGE).joinpath(name).read_text()


def fill(template: str, values: dict[str, str]) -> str:
    """Replace every {{NAME}}; a placeholder alone on its line with an empty value removes the line."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(missing)}")
    lines = []
    for line in template.splitlines(keepends=True):
        alone = PLACEHOLDER.fullmatch(line.strip())
        if alone and values[alone.group(1)] == "":
            continue
        lines.append(PLACEHOLDER.sub(lambda m: values[m.group(1)], line))
    return "".join(lines)


def _name(value: str, what: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise InputError(f"{what} {value!r} may hold only letters, digits, '.', '_' and '-'.")
    return value


def _common(workspace: Path, cli: Sequence[str], resources: Resources, job_name: str) -> dict[str, str]:
    return {
        "JOB_NAME": _name(job_name, "job name"),
        "WORKSPACE": shlex.quote(str(workspace)),
        "CLI": " ".join(shlex.quote(part) for part in cli),
        "SBATCH_LINES": "\n".join(resources.sbatch_lines()),
        "SETUP_LINES": "\n".join(resources.setup),  # trusted shell lines of the user's, verbatim
        "SIGNAL_GRACE": str(int(resources.signal_grace)),
        "MAX_RESTARTS": str(int(resources.max_restarts)),
        "EXIT_REQUEUE": str(EXIT_REQUEUE),
        "EXIT_LOCKED": str(EXIT_LOCKED),
        "EXIT_STALLED": str(EXIT_STALLED),
        "STEP_FUNCTIONS": load_template("step.bash").rstrip("\n"),
    }


def _schedule(epochs: int, iterations: int, device: str) -> dict[str, str]:
    if epochs < 1 or iterations < 1:
        raise InputError("--epochs and --iterations-per-epoch must be at least 1.")
    return {"EPOCHS": str(int(epochs)), "ITERATIONS": str(int(iterations)), "DEVICE": _name(device, "--device")}


def _tracking_options(resources: Resources) -> str:
    """What every training command is told about experiment tracking ("" for none)."""
    return "".join(f" {shlex.quote(part)}" for part in resources.tracking.options())


def _train_options(resources: Resources) -> str:
    """What `train` is told beyond its schedule: node-local staging of the preprocessed data, a seed, tracking."""
    options = ""
    if resources.stage_data:
        options += " --stage-data"
        if resources.local_scratch:
            options += f" --local-scratch {shlex.quote(resources.local_scratch)}"
    if resources.seed is not None:
        options += f" --seed {int(resources.seed)}"
    return options + _tracking_options(resources)


def _fold(workspace: Path, cli: Sequence[str], resources: Resources, configuration: str, *, epochs: int,
          iterations: int, device: str, fold: Optional[int], preset: Preset) -> str:
    config = _name(configuration, "configuration")
    _name(preset.name, "--preset")
    tagged, preset_option = preset.tagged(config), preset.option()
    values = {**_common(workspace, cli, resources, f"ibsr-nnunet-{tagged}" + ("" if fold is None else f"-fold{fold}")),
              **_schedule(epochs, iterations, device), "CONFIG": config,
              "TRAIN_OPTIONS": preset_option + _train_options(resources)}
    what = config if preset.is_default else f"{config} ({preset.plans})"
    if fold is None:
        values.update({
            "HEADER": f"# ibsr-nnunet: nnU-Net {what} training, one array task per fold (SLURM_ARRAY_TASK_ID is "
                      f"the fold).\n# Rendered by `ibsr-nnunet submit` from slurm/nnunet-fold.sbatch: run submit "
                      f"again rather than editing this file.",
            "FOLD": "${SLURM_ARRAY_TASK_ID:?submit this script as an array job, --array=FOLDS}",
            "REGISTER": "",
        })
        return fill(load_template("nnunet-fold.sbatch"), values)
    if not isinstance(fold, int) or fold < 0:
        raise InputError(f"--fold {fold!r} must be a whole number, 0 or more.")
    values.update({
        "HEADER": f"# ibsr-nnunet: nnU-Net {what} training of fold {fold}, submitted by hand: sbatch THIS_FILE.\n"
                  f"# Its log is sbatch's default, slurm-<job id>.out in the folder sbatch runs from (or sbatch "
                  f"--output=FILE).\n# It records itself in the workspace's slurm/jobs.json when it starts, so "
                  f"`ibsr-nnunet submit` and `status` see it.\n# Rendered by `ibsr-nnunet script` from "
                  f"slurm/nnunet-fold.sbatch: render it again rather than editing this file.",
        "FOLD": str(fold),
        "REGISTER": (f'"${{IBSR_NNUNET[@]}}" --workspace "$WORKSPACE" register-job --config {config} --fold "$FOLD" '
                     f'--epochs {values["EPOCHS"]} --iterations-per-epoch {values["ITERATIONS"]}{preset_option} \\\n'
                     f'  || log "could not record this job in $WORKSPACE/slurm/jobs.json (why: above); training '
                     f'anyway"'),
    })
    return fill(load_template("nnunet-fold.sbatch"), values)


def render_fold_array(workspace: Path, cli: Sequence[str], resources: Resources, *, configuration: str,
                      epochs: int, iterations: int, device: str, preset: Preset = DEFAULT) -> str:
    """One array job per nnU-Net preset and configuration; the array index is the fold."""
    return _fold(workspace, cli, resources, configuration, epochs=epochs, iterations=iterations, device=device,
                 fold=None, preset=preset)


def render_fold(workspace: Path, cli: Sequence[str], resources: Resources, *, configuration: str, fold: int,
                epochs: int, iterations: int, device: str, preset: Preset = DEFAULT) -> str:
    """One fold as a self-contained job to `sbatch` by hand (no array): it records itself in jobs.json first."""
    return _fold(workspace, cli, resources, configuration, epochs=epochs, iterations=iterations, device=device,
                 fold=fold, preset=preset)


def render_baseline(workspace: Path, cli: Sequence[str], resources: Resources, *, model: str, loss: str,
                    epochs: int, iterations: int, device: str, view: str = THICKEST) -> str:
    """One baseline job: train (on `view`'s slices), then predict."""
    return fill(load_template("baseline.sbatch"), {
        **_common(workspace, cli, resources, f"ibsr-baseline-{baseline_name(model, loss, view)}"),
        **_schedule(epochs, iterations, device),
        "MODEL": _name(model, "baseline model"),
        "LOSS": _name(loss, "baseline loss"),
        "VIEW": "" if view == THICKEST else f" --view {_name(view, 'baseline view')}",
        "TRAIN_OPTIONS": _tracking_options(resources),
    })


def render_final(workspace: Path, cli: Sequence[str], resources: Resources, *, trainer: Optional[str], device: str,
                 baseline_ensemble: Sequence[str] = ()) -> str:
    """The final job: ensemble of the nnU-Net trainer's folds (none when `trainer` is None), the ensemble of the
    baselines `baseline_ensemble` (mean probability; none when empty), then the leaderboard."""
    device = _name(device, "--device")
    steps, what = [], []
    if trainer is not None:
        trainer = shlex.quote(_name(trainer, "trainer"))
        what.append("ensemble")
        steps += [f'log "ensemble of {trainer}"',
                  f'"${{IBSR_NNUNET[@]}}" --workspace "$WORKSPACE" ensemble --trainer {trainer} --device {device}']
    if baseline_ensemble:
        members = ",".join(_name(m, "baseline") for m in baseline_ensemble)
        what.append("baseline ensemble")
        steps += [f'log "ensemble of the baselines {members}"',
                  f'"${{IBSR_NNUNET[@]}}" --workspace "$WORKSPACE" baseline ensemble --members {shlex.quote(members)} '
                  f'--device {device}']
    return fill(load_template("final.sbatch"), {
        **_common(workspace, cli, resources, "ibsr-final"),
        "WHAT": " and ".join(what) or "nothing to ensemble",
        "ENSEMBLE_STEPS": "\n".join(steps),
    })


def log_pattern(folder: Path, name: str) -> str:
    """sbatch --output for `name` (which may use SLURM's %A, %a, %j) in `folder`, whose own '%' are escaped."""
    return str(folder).replace("%", "%%") + "/" + name


def sbatch_argv(script: Path, log: str, chdir: Path, *, array: Optional[Sequence[int]] = None,
                array_parallel: Optional[int] = None, dependency: Sequence[str] = (),
                sbatch: str = "sbatch") -> list[str]:
    """The exact sbatch command line (an argv list: no shell ever parses it); `array_parallel` throttles the array."""
    argv = [sbatch, "--parsable", f"--output={log}", f"--chdir={chdir}"]
    if array:
        argv.append("--array=" + ",".join(str(int(i)) for i in array)
                    + (f"%{int(array_parallel)}" if array_parallel else ""))
    if dependency:
        argv.append("--dependency=afterok:" + ":".join(dependency))
        argv.append("--kill-on-invalid-dep=yes")  # a failed job cancels what waits on it
    argv.append(str(script))
    return argv


def default_cli() -> list[str]:
    """How the scripts call ibsr-nnunet: this interpreter's absolute path, so a job needs no venv on PATH."""
    return [str(Path(sys.executable).absolute()), "-m", "ibsr_nnunet"]

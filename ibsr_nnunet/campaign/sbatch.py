"""The one module that renders sbatch text: the templates in `slurm/` filled from resources and job parameters.

The templates travel as package data (`ibsr_nnunet.campaign.templates`, mapped onto the checkout's `slurm/` folder
by pyproject.toml, so there is one copy of each) and are read with importlib.resources, installed or editable.
Everything here is a pure function of its arguments (the templates are read, nothing else is touched):
the same inputs give byte-identical scripts, which the golden files in tests/golden pin. Every value that reaches
bash is either checked against a strict pattern (configuration, model, numbers) or passed through `shlex.quote`
(workspace path, command prefix, trainer name); paths never go into `#SBATCH` lines (the log path travels as an
argument of the sbatch command line, see `sbatch_argv`).
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

from ..core.errors import InputError
from ..core.exitcodes import EXIT_REQUEUE

TEMPLATE_PACKAGE = "ibsr_nnunet.campaign.templates"  # the checkout's slurm/ folder
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:,+@/=-]+")  # partition, account, time, mem: no blanks, quotes or $
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # configuration, model, loss, device, trainer
DEFAULT_SIGNAL_GRACE = 600


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

    def __post_init__(self) -> None:
        for name in ("partition", "account", "time", "mem"):
            value = getattr(self, name)
            if value is not None and not SAFE_VALUE.fullmatch(value):
                raise InputError(f"--{name.replace('_', '-')} {value!r} has characters SLURM does not use there; "
                                 f"use letters, digits and . : , + @ / = - only.")
        if self.gpus_per_job < 0 or self.cpus_per_task < 1:
            raise InputError("--gpus-per-job must be 0 or more and --cpus-per-task 1 or more.")
        if self.gpu_option not in ("gres", "gpus"):
            raise InputError(f"gpu_option {self.gpu_option!r} is unknown; use gres (--gres=gpu:N) or gpus (--gpus=N).")
        if self.signal_grace < 1:
            raise InputError("--signal-grace must be at least 1 second (SLURM checks on a ~30 s tick; 300+ is sane).")
        for line in self.extra_sbatch:
            extra_sbatch_line(line)

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
            options.append(f"--gres=gpu:{self.gpus_per_job}" if self.gpu_option == "gres" else f"--gpus={self.gpus_per_job}")
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
    (partition, account, time, gpus_per_job, gpu_option, cpus_per_task, mem, signal_grace, extra_sbatch)."""
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
    if "extra_sbatch" in settings:
        extra = settings["extra_sbatch"]
        settings["extra_sbatch"] = tuple([extra] if isinstance(extra, str) else extra)
    return settings


def resources_from(config_file: Optional[Path] = None, **options: Any) -> Resources:
    """Defaults, then the config file, then every option that was given (not None / not empty)."""
    settings: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for key, value in options.items():
        if key not in RESOURCE_KEYS:
            raise TypeError(key)
        if value is None or (key == "extra_sbatch" and not value):
            continue
        settings[key] = tuple(value) if key == "extra_sbatch" else value
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
        "SIGNAL_GRACE": str(int(resources.signal_grace)),
        "EXIT_REQUEUE": str(EXIT_REQUEUE),
        "STEP_FUNCTIONS": load_template("step.bash").rstrip("\n"),
    }


def _schedule(epochs: int, iterations: int, device: str) -> dict[str, str]:
    if epochs < 1 or iterations < 1:
        raise InputError("--epochs and --iterations-per-epoch must be at least 1.")
    return {"EPOCHS": str(int(epochs)), "ITERATIONS": str(int(iterations)), "DEVICE": _name(device, "--device")}


def render_fold_array(workspace: Path, cli: Sequence[str], resources: Resources, *, configuration: str,
                      epochs: int, iterations: int, device: str) -> str:
    """One array job per nnU-Net configuration; the array index is the fold."""
    return fill(load_template("nnunet-fold.sbatch"), {
        **_common(workspace, cli, resources, f"ibsr-nnunet-{configuration}"),
        **_schedule(epochs, iterations, device),
        "CONFIG": _name(configuration, "configuration"),
    })


def render_baseline(workspace: Path, cli: Sequence[str], resources: Resources, *, model: str, loss: str,
                    epochs: int, iterations: int, device: str) -> str:
    return fill(load_template("baseline.sbatch"), {
        **_common(workspace, cli, resources, f"ibsr-baseline-{model}__{loss}"),
        **_schedule(epochs, iterations, device),
        "MODEL": _name(model, "baseline model"),
        "LOSS": _name(loss, "baseline loss"),
    })


def render_final(workspace: Path, cli: Sequence[str], resources: Resources, *, trainer: str, device: str) -> str:
    """The final job: ensemble of the nnU-Net trainer's folds, then the leaderboard."""
    return fill(load_template("final.sbatch"), {
        **_common(workspace, cli, resources, "ibsr-final"),
        "TRAINER": shlex.quote(_name(trainer, "trainer")),
        "DEVICE": _name(device, "--device"),
    })


def log_pattern(folder: Path, name: str) -> str:
    """sbatch --output for `name` (which may use SLURM's %A, %a, %j) in `folder`, whose own '%' are escaped."""
    return str(folder).replace("%", "%%") + "/" + name


def sbatch_argv(script: Path, log: str, chdir: Path, *, array: Optional[Sequence[int]] = None,
                dependency: Sequence[str] = (), sbatch: str = "sbatch") -> list[str]:
    """The exact sbatch command line (an argv list: no shell ever parses it)."""
    argv = [sbatch, "--parsable", f"--output={log}", f"--chdir={chdir}"]
    if array:
        argv.append("--array=" + ",".join(str(int(i)) for i in array))
    if dependency:
        argv.append("--dependency=afterok:" + ":".join(dependency))
        argv.append("--kill-on-invalid-dep=yes")  # a failed job cancels what waits on it
    argv.append(str(script))
    return argv


def default_cli() -> list[str]:
    """How the scripts call ibsr-nnunet: this interpreter's absolute path, so a job needs no venv on PATH."""
    return [str(Path(sys.executable).absolute()), "-m", "ibsr_nnunet"]

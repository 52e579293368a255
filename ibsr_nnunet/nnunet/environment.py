"""nnU-Net's environment: its path variables from the workspace, its process counts, our trainers' folder, its pools."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import types
from pathlib import Path

from ..core.devices import torch_device
from ..core.workspace import Workspace

EXT_TRAINER_FOLDER = Path(__file__).parent / "ext_trainers"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def configure_worker_counts(cores: int) -> None:
    """nnU-Net's process counts from the cores we have (its defaults assume 8-12); a user's own values win."""
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, cores)))
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, cores)))


def configure(ws: Workspace, cores: int) -> None:
    """nnU-Net's paths from the workspace, its worker counts from our cores, and where to find our trainers."""
    ws.export_env()
    configure_worker_counts(cores)
    existing = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(EXT_TRAINER_FOLDER) not in existing:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*existing, str(EXT_TRAINER_FOLDER)])


def resolve_device(device: str):
    """The torch device, with torch's CPU threads set to nnU-Net's process count when it is the CPU."""
    import torch

    resolved = torch_device(device)
    if resolved.type == "cpu":
        torch.set_num_threads(max(1, int(os.environ.get("nnUNet_def_n_proc", "1"))))
    return resolved


def die_with(parent_pid: int) -> None:
    """Make this process end when `parent_pid` does, whatever kills it (SIGKILL included): the kernel sends SIGKILL
    on the parent's death (prctl), and a parent already gone before that call (the race) ends us here."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the SLURM job's final SIGKILL still ends the workers
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _bound_worker_start(parent_pid: int, initializer, initargs: tuple) -> None:
    die_with(parent_pid)
    if initializer is not None:
        initializer(*initargs)


class _ForkContext:
    """The fork context, except that its pools' workers die with the process that opened the pool (they would
    go on writing after a killed parent otherwise). The kernel ties that to the opening thread: open pools from a
    thread that outlives them (nnU-Net opens them in the calling one)."""

    def __init__(self):
        self._context = multiprocessing.get_context("fork")

    def Pool(self, processes=None, initializer=None, initargs=(), *args, **kwargs):
        return self._context.Pool(processes, _bound_worker_start, (os.getpid(), initializer, initargs),
                                  *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._context, name)


@contextlib.contextmanager
def fork_pools(module: types.ModuleType):
    """nnU-Net opens *spawn* pools whose workers each re-import torch (~3 s apiece); fork workers inherit it, and
    end with us."""
    fork_only = types.SimpleNamespace(get_context=lambda method=None: _ForkContext())
    original = module.multiprocessing
    module.multiprocessing = fork_only
    try:
        yield
    finally:
        module.multiprocessing = original


@contextlib.contextmanager
def quiet_fork_pools(log: Path):
    """nnU-Net's evaluation/ensembling/postprocessing: fork pools, and its chatter into `log` instead of our screen."""
    import nnunetv2.ensembling.ensemble as ensemble
    import nnunetv2.evaluation.evaluate_predictions as evaluate
    import nnunetv2.postprocessing.remove_connected_components as postprocessing

    with open(log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.ExitStack() as stack:
        for module in (ensemble, evaluate, postprocessing):
            stack.enter_context(fork_pools(module))
        yield


@contextlib.contextmanager
def tracked(tracking, run_id: str):
    """nnU-Net's own W&B variables (v2.7+: nnUNet_wandb_enabled, _project, _mode) for a trainer built inside, with
    W&B's run id set to ours (nnU-Net takes W&B's default, and on a resume the id it finds in the fold's wandb/);
    W&B kept off the console. Restored afterwards. `tracking`: core.tracking.Tracking."""
    if not tracking.enabled:
        yield
        return
    settings = {"nnUNet_wandb_enabled": "1", "nnUNet_wandb_project": tracking.project,
                "nnUNet_wandb_mode": tracking.mode, "WANDB_RUN_ID": run_id, "WANDB_SILENT": "true",
                "WANDB_CONSOLE": "off"}
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

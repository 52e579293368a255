"""A baseline run's options: validated keyword arguments, and the defaults tuned for each device (the only place
either is defined)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ibsr_nnunet.core.choices import one_of, positive as must_be_positive
from ibsr_nnunet.core.devices import DEVICES, torch_device
from ibsr_nnunet.core.errors import InputError

from .registry import LOSSES, MODELS, OPTIMIZERS, SCHEDULES, THICKEST, check_view

# options that define what is learnt: a run folder refuses to resume under different ones
IDENTITY = ("model", "loss", "view", "width", "depth", "dropout", "patch_size", "batch_size", "optimizer", "schedule",
            "flip", "seed")
LEGACY = {"view": THICKEST, "flip": False, "appearance": False}  # what runs saved before an option was added did
# the CPU defaults' budgets, in training iterations: the same schedule, and for one seed and thread count the same
# model, on any machine (bench/baseline_cpu.py gives their minutes on 2 cores)
CPU_ITERATIONS = {2: 1000, 3: 800}
BUDGETS = ("iterations", "epochs", "minutes")


@dataclass(frozen=True)
class TrainOptions:
    """Everything one baseline run depends on.

    model / loss: names from baselines.models.MODELS and baselines.losses.LOSSES. view: what 2D models slice
    across: "thickest" (the axis with the largest spacing: coronal on IBSR) or coronal | axial | sagittal, found in
    each image's axis codes.
    width, depth, dropout: network size (see baselines.models.UNet). patch_size: patch edge in voxels (2D: size×size
    slices; 3D: size³). batch_size: patches per iteration. optimizer: adam | sgd (momentum 0.99, Nesterov) | adadelta.
    lr: initial learning rate. schedule: "plateau" (ReduceLROnPlateau on validation loss, factor 0.5 after
    plateau_patience epochs) or "cosine" (linear warm-up over warmup_iterations, then cosine decay to 0 over the
    budget, by iterations, epochs or minutes, whichever runs out first). iterations / epochs / minutes: budget (at
    least one; iterations counts training steps in all, the last epoch cut short to meet it; minutes counts wall
    time summed across resumes, so it is the one budget that depends on the machine). iterations_per_epoch:
    training iterations between validations.
    patience: stop after this many epochs without a better validation loss. val_cases: training subjects kept for
    internal validation (0 = 20 %, at least one). val_batches: fixed validation batches per epoch.
    csf_fraction: share of patches centred on CSF. augment: flips, rotation, scale, shear and intensity jitter.
    flip: mirror half the patches left-right (a symmetry of the brain; the left-right axis is read from each
    image's axis codes), which also makes test-time mirroring mirror that axis only.
    appearance: gamma, bias field, noise and lower resolution (baselines.data.Appearance), for scans from elsewhere.
    device: auto | cuda | cpu. amp: mixed precision (fp16 on CUDA, bf16 on CPUs with native bf16). threads: CPU threads
    (0 = pick 1 or torch's count while training, whichever is faster now: see baselines.threads).
    infer_window: sliding-window edge at inference (0 = patch_size). seed: data order, augmentation,
    initialisation and validation split.
    """

    model: str = "unet2d"
    loss: str = "dice_ce"
    view: str = THICKEST
    width: int = 32
    depth: int = 5
    dropout: float = 0.4
    patch_size: int = 128
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "plateau"
    warmup_iterations: int = 0
    plateau_patience: int = 3
    epochs: int | None = 100
    minutes: float | None = None
    iterations: int | None = None
    iterations_per_epoch: int = 250
    patience: int = 10
    val_cases: int = 0
    val_batches: int = 8
    csf_fraction: float = 0.33
    augment: bool = True
    flip: bool = False
    appearance: bool = True
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    infer_window: int = 0
    seed: int = 0

    def __post_init__(self):
        for option, value, choices in (("--model", self.model, MODELS), ("--loss", self.loss, LOSSES),
                                       ("--optimizer", self.optimizer, OPTIMIZERS),
                                       ("--schedule", self.schedule, SCHEDULES), ("--device", self.device, DEVICES)):
            one_of(option, value, choices)
        check_view(self.model, self.view)
        if self.epochs is None and self.minutes is None and self.iterations is None:
            raise InputError("training has no budget; pass --iterations N, --epochs N and/or --minutes M.")
        positive = {"width": self.width, "patch_size": self.patch_size, "batch_size": self.batch_size,
                    "iterations_per_epoch": self.iterations_per_epoch, "patience": self.patience,
                    "val_batches": self.val_batches, "lr": self.lr, "epochs": self.epochs or 1,
                    "minutes": self.minutes or 1, "iterations": self.iterations or 1}
        for name, value in positive.items():
            must_be_positive(name, value)
        if self.infer_window < 0 or self.warmup_iterations < 0 or self.val_cases < 0:
            raise InputError(f"infer_window, warmup_iterations and val_cases must be >= 0; got {self.infer_window}, "
                             f"{self.warmup_iterations}, {self.val_cases}.")
        if self.depth < 2 or not 0 <= self.dropout < 1 or not 0 <= self.csf_fraction <= 0.9:
            raise InputError(f"depth must be >= 2, dropout in [0, 1) and csf_fraction in [0, 0.9]; got depth "
                             f"{self.depth}, dropout {self.dropout}, csf_fraction {self.csf_fraction}.")

    @property
    def dims(self) -> int:
        return 3 if self.model == "unet3d" else 2

    @property
    def patch(self) -> tuple[int, ...]:
        return (self.patch_size,) * self.dims

    @classmethod
    def for_device(cls, **given: Any) -> "TrainOptions":
        """Options from keyword arguments where None means "left out": those take the defaults tuned for the
        device, model and optimiser (device_defaults), then the class defaults. The budgets given (iterations, epochs,
        minutes) are the whole budget; none given, it is the device's default (CPU: iterations; else epochs)."""
        chosen = {k: v for k, v in given.items() if v is not None}
        default = cls.__dataclass_fields__
        if any(budget in chosen for budget in BUDGETS):  # the budget given is the whole budget
            chosen = {**dict.fromkeys(BUDGETS), **chosen}
        tuned = device_defaults(chosen.get("device", default["device"].default),
                                chosen.get("optimizer", default["optimizer"].default),
                                chosen.get("model", default["model"].default))
        return cls(**{**tuned, **chosen})


def option_default(name: str) -> Any:
    """The class default of one option (what the CLI's help quotes)."""
    return TrainOptions.__dataclass_fields__[name].default


def device_defaults(device: str, optimizer: str = "adam", model: str = "unet2d") -> dict:
    """Defaults tuned for time-to-accuracy on the device: on CPU a compact 2D net (width 16, ~1.9 M parameters),
    bf16, an iteration budget (CPU_ITERATIONS) with warm-up + cosine decay, whole-plane inference windows, left-right
    flips and no other augmentation (a short budget sees each slice only a few times: fully augmented, mean Dice
    0.916; plain, 0.941 — bench/baseline_cpu.py); the classic U-Net setting elsewhere. unet3d gets 3D-sized
    patches (64³ on CPU, 96³ on GPU, batch 2) and patch-sized inference windows. SGD and Adadelta get their usual
    learning rates (0.01 and 1.0)."""
    cpu = torch_device(device).type == "cpu"
    defaults = {}
    if cpu:
        defaults = {"width": 16, "dropout": 0.1, "patch_size": 128, "batch_size": 8, "lr": 3e-3, "schedule": "cosine",
                    "warmup_iterations": 100, "iterations_per_epoch": 200, "val_batches": 4, "augment": False,
                    "flip": True, "infer_window": 256, "epochs": None,
                    "iterations": CPU_ITERATIONS[3 if model == "unet3d" else 2]}
    if model == "unet3d":
        defaults.update(patch_size=64 if cpu else 96, batch_size=2, infer_window=0)
    if optimizer in ("sgd", "adadelta"):
        defaults["lr"] = {"sgd": 1e-2, "adadelta": 1.0}[optimizer]
    return defaults


def options_from(saved: dict) -> TrainOptions:
    """TrainOptions from a saved dict, ignoring keys this version no longer knows."""
    known = {f.name for f in fields(TrainOptions)}
    saved = {**LEGACY, **saved}
    return TrainOptions(**{k: v for k, v in saved.items() if k in known})

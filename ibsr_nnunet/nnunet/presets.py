"""nnU-Net's plans presets: the original default and the residual-encoder presets M, L and XL (no nnunetv2 import).

Each is one planner class of nnU-Net writing one plans file; its 2d and 3d_fullres share the preprocessed data of
the default plans (nnU-Net's ResEnc planners keep the data identifiers nnUNetPlans_2d and nnUNetPlans_3d_fullres),
so adding a preset to a planned workspace is experiment planning only."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.choices import one_of
from ..core.errors import InputError
from ..core.vocabulary import DEFAULT_PRESET, PRESET_TAGS, PRESETS


@dataclass(frozen=True)
class Preset:
    """One preset: our name for it, nnU-Net's planner class and plans identifier, and the GPU memory its plans are
    sized for (nnU-Net's gpu_memory_target_in_gb)."""

    name: str
    planner: str
    plans: str
    gpu_memory_gb: int

    @property
    def tag(self) -> str:
        """What model names carry of the preset: '' (default), resencm, resencl, resencxl."""
        return PRESET_TAGS[self.name]

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_PRESET

    def option(self, name: str = "--preset") -> str:
        """The command-line option that names this preset, ' --preset resenc-m' (or `name`, e.g. --presets); '' for
        the default: commands stay as they were."""
        return "" if self.is_default else f" {name} {self.name}"

    def label(self, configuration: str) -> str:
        """'2d' for the default plans, 'resenc-m 2d' for another preset."""
        return configuration if self.is_default else f"{self.name} {configuration}"

    def tagged(self, configuration: str) -> str:
        """'2d' for the default plans, 'resencm-2d' for another preset (job and script names)."""
        return f"{self.tag}-{configuration}" if self.tag else configuration


PRESET_TABLE = {preset.name: preset for preset in (
    Preset("default", "ExperimentPlanner", "nnUNetPlans", 8),
    Preset("resenc-m", "nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans", 8),
    Preset("resenc-l", "nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans", 24),
    Preset("resenc-xl", "nnUNetPlannerResEncXL", "nnUNetResEncUNetXLPlans", 40),
)}
assert tuple(PRESET_TABLE) == PRESETS
DEFAULT = PRESET_TABLE[DEFAULT_PRESET]
BY_PLANS = {preset.plans: preset for preset in PRESET_TABLE.values()}


def preset_named(name: str, option: str = "--preset") -> Preset:
    """The preset `name`; InputError listing the presets for any other name."""
    return PRESET_TABLE[one_of(option, name, PRESETS)]


def presets_named(text: str, option: str = "--presets") -> tuple[Preset, ...]:
    """'default,resenc-m' -> those presets in the table's order (duplicates once); InputError for an unknown one or
    none."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError(f"{option} is empty; pass one or more of {', '.join(PRESETS)}, comma-separated.")
    chosen = {preset_named(n, option).name for n in names}
    return tuple(preset for name, preset in PRESET_TABLE.items() if name in chosen)


def refuse_oversized(presets: tuple[Preset, ...], gpu_memory_gb: int | None) -> None:
    """Refuse, before any job starts, a preset whose plans need more GPU memory than the user's GPUs have."""
    if gpu_memory_gb is None:
        return
    too_big = [p for p in presets if p.gpu_memory_gb > gpu_memory_gb]
    if too_big:
        listed = ", ".join(f"{p.name} ({p.gpu_memory_gb} GB)" for p in too_big)
        fitting = [p.name for p in PRESET_TABLE.values() if p.gpu_memory_gb <= gpu_memory_gb]
        raise InputError(f"--gpu-memory {gpu_memory_gb} GB is less than the GPU memory nnU-Net sizes {listed} for: "
                         f"it would run out of memory; use {', '.join(fitting) or 'a GPU with more memory'}"
                         f"{' instead' if fitting else ''}.")

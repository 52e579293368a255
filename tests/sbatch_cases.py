"""The sbatch cases that the golden files in tests/golden/ pin: the resources and each rendered script."""

from __future__ import annotations

from pathlib import Path

from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.nnunet.presets import PRESET_TABLE

WS = Path("/scratch/ibsr/ws")
CLI = ["/opt/venv/bin/python", "-m", "ibsr_nnunet"]
GPU = sbatch.resources_from(partition="gpu", account="proj42", time="24:00:00", gpus_per_job=1, cpus_per_task=8,
                            mem="32G", signal_grace=600, extra_sbatch=["--qos=long", "#SBATCH --constraint=a100"],
                            setup=["module load cuda/12.4", "source /opt/venv/bin/activate"], max_restarts=20)
GPU_STAGED = sbatch.resources_from(partition="gpu", time="1-00:00:00", gpus_per_job=1, setup=["module load cuda/12.4"],
                                   stage_data=True, local_scratch="/local scratch/ibsr")
CPU = sbatch.Resources(gpus_per_job=0, cpus_per_task=1, signal_grace=300)

CASES = {
    "nnunet-fold-3d_fullres-gpu.sbatch": lambda: sbatch.render_fold_array(
        WS, CLI, GPU, configuration="3d_fullres", epochs=1000, iterations=250, device="auto"),
    "nnunet-fold-2d-cpu.sbatch": lambda: sbatch.render_fold_array(
        WS, CLI, CPU, configuration="2d", epochs=3, iterations=2, device="cpu"),
    "nnunet-fold-3d_fullres-fold0-gpu-staged.sbatch": lambda: sbatch.render_fold(
        WS, CLI, GPU_STAGED, configuration="3d_fullres", fold=0, epochs=1000, iterations=250, device="cuda"),
    "nnunet-fold-2d-fold3-cpu.sbatch": lambda: sbatch.render_fold(
        WS, CLI, CPU, configuration="2d", fold=3, epochs=3, iterations=2, device="cpu"),
    "nnunet-fold-resencl-3d_fullres-gpu.sbatch": lambda: sbatch.render_fold_array(
        WS, CLI, GPU, configuration="3d_fullres", epochs=1000, iterations=250, device="auto",
        preset=PRESET_TABLE["resenc-l"]),
    "nnunet-fold-resencm-2d-fold1-cpu.sbatch": lambda: sbatch.render_fold(
        WS, CLI, CPU, configuration="2d", fold=1, epochs=3, iterations=2, device="cpu",
        preset=PRESET_TABLE["resenc-m"]),
    "baseline-unet2d__dice_ce-gpu.sbatch": lambda: sbatch.render_baseline(
        WS, CLI, GPU, model="unet2d", loss="dice_ce", epochs=50, iterations=100, device="cuda"),
    "baseline-unet2d_axial__dice_ce-cpu.sbatch": lambda: sbatch.render_baseline(
        WS, CLI, CPU, model="unet2d", loss="dice_ce", view="axial", epochs=5, iterations=200, device="cpu"),
    "final-baseline-ensemble-cpu.sbatch": lambda: sbatch.render_final(
        WS, CLI, CPU, trainer=None, device="cpu",
        baseline_ensemble=("unet2d__dice_ce", "unet2d_axial__dice_ce", "unet2d_sagittal__dice_ce", "unet3d__dice_ce")),
    "final-gpu.sbatch": lambda: sbatch.render_final(WS, CLI, GPU, trainer="IbsrTrainer", device="auto"),
    "final-cpu.sbatch": lambda: sbatch.render_final(WS, CLI, CPU, trainer="IbsrTrainer_3ep_2it", device="cpu"),
}

"""Seconds per full-size IBSR scan of `ibsr-nnunet segment` on CPU for every model kind, with and without mirroring.

On a workspace converted from the shared real IBSR18 data: trains nnU-Net 2d and 3d_fullres fold 0 (the folds the
test workspace has) and a unet2d baseline with a token schedule (speed of inference does not depend on how long
they trained), records the models nnunet_2d, nnunet_3d_fullres and nnunet_ensemble (2d + 3d_fullres, softmax
averaged) as `ensemble` would, then segments one real Test_Set scan (256×128×256) with each through
`ibsr-nnunet segment`, with and without test-time mirroring (`--tta/--no-tta`). Every timing is a whole command in
a fresh process (start-up, reading, staging, prediction, postprocessing and writing included), best of --repeats.

Shortcuts that change nothing the timings see: the nnU-Net folds are trained without nnU-Net's validation pass
(two full-size cases predicted with 8-pass mirroring in 3d_fullres, the slowest step on a CPU), so there is no
cross-validation to pick a postprocessing from; every nnU-Net model gets the same one-step postprocessing (keep the
largest connected component of GM and WM), written as nnU-Net's postprocessing.pkl.

Also in the same run: the baseline's seconds per scan for 1 scan and for 8 scans (one command; the next scan is
read and preprocessed on a thread while one is predicted); with `--cli`, the same nnU-Net 2d model through
`nnUNetv2_predict` + `nnUNetv2_apply_postprocessing` (ours / theirs: segment's overhead, target <= 1.05); with
`--baseline-run DIR` (a run folder of bench/baseline_cpu.py's workspace, e.g. <ws>/baselines/unet2d__dice_ce),
the Dice difference mirroring makes for that baseline on its workspace's held-out subjects.

    python bench/segment.py [--repeats 1] [--baseline-run DIR] [--cli] [--workspace DIR]

--workspace keeps the trained workspace in DIR; a second run with the same DIR reuses it.
Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ibsr18"
SCAN = SHARED / "Test_Set" / "IBSR_02" / "IBSR_02.nii.gz"
EPOCHS, ITERATIONS = 1, 2  # nnU-Net's token schedule

# a fold trained without nnU-Net's validation pass, and nnU-Net's postprocessing.pkl for "keep GM's and WM's largest
# connected component"; run in a child process: it imports nnU-Net and patches its trainer, the bench does not
TRAIN_FOLD = """
import sys
from pathlib import Path
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
nnUNetTrainer.perform_actual_validation = lambda self, *args, **kwargs: None
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.environment import configure
from ibsr_nnunet.nnunet.train import train
ws = Workspace.open(Path(sys.argv[1]))
configure(ws, 2)
train(ws, sys.argv[2], 0, epochs=int(sys.argv[3]), iterations=int(sys.argv[4]), device="cpu")
"""
POSTPROCESSING = """
import sys
from batchgenerators.utilities.file_and_folder_operations import save_pickle
from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
save_pickle(([remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": [2, 3]}]), sys.argv[1])
"""


def ibsr(ws: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"ibsr-nnunet {' '.join(args)} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done


def timed(command: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return time.perf_counter() - started


def tta_dice(run: Path) -> str:
    """Mean Dice over the held-out cases of the run's workspace (bench/baseline_cpu.py's: <ws>/baselines/<run>),
    with and without mirroring."""
    from baseline_cpu import mirroring_dice
    from ibsr_nnunet.core.vocabulary import TISSUES
    from ibsr_nnunet.core.workspace import Workspace

    held_out = [(case.id, case.image, case.label) for case in Workspace(run.parent.parent).cases("heldout")]
    means = mirroring_dice(run, held_out)
    per_class = ", ".join(f"{c} {means[False][i]:.4f} -> {means[True][i]:.4f}"
                          for i, c in enumerate(TISSUES.values()))
    return (f"mean Dice over {', '.join(c[0] for c in held_out)} {means[False].mean():.4f} without, "
            f"{means[True].mean():.4f} with ({means[True].mean() - means[False].mean():+.4f}; {per_class})")


def prepare(ws_root: Path, say) -> tuple[str, Path]:
    """Convert, plan, train (token schedules) and record the three nnU-Net models and unet2d; reuses what is there."""
    from ibsr_nnunet.core.manifest import read_manifest
    from ibsr_nnunet.core.provenance import dataset_fingerprint, write_provenance
    from ibsr_nnunet.core.vocabulary import NNUNET_MODELS
    from ibsr_nnunet.core.workspace import Workspace
    from ibsr_nnunet.nnunet.ensemble import model_record
    from ibsr_nnunet.nnunet.paths import fold_folder, plans_file, trainer_name
    from ibsr_nnunet.nnunet.prediction_record import write_prediction_record

    ws = Workspace.open(ws_root)
    if not ws.manifest.is_file():
        say("convert ...")
        ibsr(ws.root, "convert", str(SHARED))
    plans = plans_file(ws)
    if not plans.is_file() or "3d_fullres" not in json.loads(plans.read_text())["configurations"] \
            or not (ws.preprocessed_dataset / "nnUNetPlans_3d_fullres").is_dir():
        say("plan 2d,3d_fullres ...")
        ibsr(ws.root, "plan", "--configs", "2d,3d_fullres")
    trainer = trainer_name(EPOCHS, ITERATIONS)
    for configuration in ("2d", "3d_fullres"):
        if not (fold_folder(ws, configuration, 0, trainer=trainer) / "checkpoint_final.pth").is_file():
            say(f"train {configuration} fold 0 ({EPOCHS} epoch x {ITERATIONS} iterations, no validation pass) ...")
            started = time.perf_counter()
            timed([sys.executable, "-c", TRAIN_FOLD, str(ws.root), configuration, str(EPOCHS), str(ITERATIONS)])
            say(f"  {time.perf_counter() - started:.0f} s")
    if not (ws.baselines / "unet2d__dice_ce" / "best.pt").is_file():
        say("baseline train unet2d ...")
        ibsr(ws.root, "baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", "1",
             "--iterations-per-epoch", "5", "--device", "cpu")
    pkl = ws.root / "bench_postprocessing.pkl"
    timed([sys.executable, "-c", POSTPROCESSING, str(pkl)])
    axcodes = read_manifest(ws).training_axcodes
    for key, configurations in (("2d", ("2d",)), ("3d_fullres", ("3d_fullres",)), ("ensemble", ("2d", "3d_fullres"))):
        name = NNUNET_MODELS[key]
        write_prediction_record(ws.predictions / name, model_record(
            name, trainer, configurations=configurations, folds=(0,), postprocessing_pkl=pkl, crossval_dice=None,
            axcodes=axcodes))  # no validation pass
        write_provenance(ws.predictions / name, dataset_fingerprint(ws), model=name)
    return trainer, pkl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-run", help="a baseline run folder (bench/baseline_cpu.py) for the mirroring Dice")
    parser.add_argument("--cli", action="store_true", help="also time nnU-Net's own CLI on the 2d model")
    parser.add_argument("--workspace", type=Path, help="keep (and reuse) the trained workspace here")
    parser.add_argument("--models", default="unet2d__dice_ce,nnunet_2d,nnunet_3d_fullres,nnunet_ensemble",
                        help="comma-separated models to time")
    args = parser.parse_args()

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    from ibsr_nnunet.core.workspace import Workspace
    from ibsr_nnunet.nnunet.environment import EXT_TRAINER_FOLDER
    from ibsr_nnunet.nnunet.paths import model_folder

    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws_root = args.workspace or root / "ws"
        trainer, pkl = prepare(ws_root, say)
        dice_note = tta_dice(Path(args.baseline_run)) if args.baseline_run else "(pass --baseline-run to measure it)"
        say(f"Dice difference mirroring makes for the baseline: {dice_note}")
        ws = Workspace.open(ws_root)

        def ours_cmd(model: str, tta: bool, scans: list[Path], out: str) -> list[str]:
            return [sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws.root), "segment", *map(str, scans),
                    "--output", str(root / out), "--model", model, "--device", "cpu", "--no-qc",
                    "--tta" if tta else "--no-tta"]

        eight = root / "eight"
        eight.mkdir()
        for i in range(8):
            shutil.copy(SCAN, eight / f"scan{i}.nii.gz")
        times: dict[str, list[float]] = {}

        def note(key: str, seconds: float) -> None:
            times.setdefault(key, []).append(seconds)
            say(f"{key}: {seconds:.1f} s")

        for repeat in range(args.repeats):
            if args.cli:
                staged = root / "nnunet-in"
                staged.mkdir(exist_ok=True)
                shutil.copy(SCAN, staged / "IBSR_02_0000.nii.gz")
                env = {**os.environ, **ws.nnunet_env(), "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER)}
                for folder in ("nnunet-out", "nnunet-pp"):
                    shutil.rmtree(root / folder, ignore_errors=True)
                note("nnUNetv2_predict + apply_postprocessing, 2d tta", sum(timed(c, env) for c in [
                    ["nnUNetv2_predict", "-i", str(staged), "-o", str(root / "nnunet-out"), "-d", str(ws.dataset_id),
                     "-c", "2d", "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_progress_bar", "-npp", "1",
                     "-nps", "1"],
                    ["nnUNetv2_apply_postprocessing", "-i", str(root / "nnunet-out"), "-o", str(root / "nnunet-pp"),
                     "-pp_pkl_file", str(pkl), "-np", "1",
                     "-plans_json", str(model_folder(ws, "2d", trainer) / "plans.json")]]))
            # cheapest first, so that a run cut short has the most rows: every model without mirroring (the
            # baseline's 1 scan and 8 scans side by side), then every model with it
            for tta in (False, True):
                for model in models:
                    key = f"{model} {'tta' if tta else 'no tta'}"
                    note(key, timed(ours_cmd(model, tta, [SCAN], f"out-{key}-{repeat}")))
                    if model == "unet2d__dice_ce" and not tta:
                        note("unet2d__dice_ce no tta, 8 scans, per scan",
                             timed(ours_cmd(model, False, [eight], f"out-eight-{repeat}")) / 8)
        volumes = {}
        for model in models:
            row = open(root / f"out-{model} no tta-0" / "volumes.csv").read().splitlines()
            header, values = row[0].split(","), row[1].split(",")
            volumes[model] = {k: round(float(values[header.index(k)]), 1) for k in ("CSF_ml", "GM_ml", "WM_ml")}

    print(f"\nfull-size scan {SCAN.name} (256x128x256), CPU, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; best of {args.repeats}; whole `segment` commands")
    print(f"  {'model':22s} {'no tta':>8s} {'tta':>8s} {'tta / no tta':>13s}")
    for model in models:
        plain, mirrored = min(times[f"{model} no tta"]), min(times[f"{model} tta"])
        print(f"  {model:22s} {plain:7.1f}s {mirrored:7.1f}s {mirrored / plain:12.2f}x")
    if args.cli:
        theirs = min(times["nnUNetv2_predict + apply_postprocessing, 2d tta"])
        print(f"  nnUNetv2_predict + apply_postprocessing (2d, mirroring): {theirs:.1f} s; ours / theirs "
              f"{min(times['nnunet_2d tta']) / theirs:.3f} (target <= 1.05)")
    print(f"  unet2d__dice_ce without mirroring, seconds per scan: 1 scan {min(times['unet2d__dice_ce no tta']):.1f} s,"
          f" 8 scans {min(times['unet2d__dice_ce no tta, 8 scans, per scan']):.1f} s (whole command / 8)")
    print(f"  Dice difference mirroring makes for the baseline: {dice_note}")
    print(f"  volumes without mirroring, mL (token training): {json.dumps(volumes)}")


if __name__ == "__main__":
    main()

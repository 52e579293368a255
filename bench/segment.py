"""Seconds per full-size IBSR scan of `ibsr-nnunet segment` on CPU, and its overhead over nnU-Net's own CLI.

On a workspace converted from the shared real IBSR18 data: trains nnU-Net 2d fold 0 and a unet2d baseline with a
token schedule (speed of inference does not depend on how long they trained), then segments one real Test_Set
scan (256×128×256) with each through `ibsr-nnunet segment`, and, in the same run, predicts the same scan with the
same nnU-Net model through `nnUNetv2_predict` + `nnUNetv2_apply_postprocessing` (the same folds, tiling, mirroring
and postprocessing; the input renamed to `_0000`, which segment spares the user). Both sides are whole commands in
fresh processes, alternated, best of --repeats. Overhead ratio = ours / nnU-Net's (target <= 1.05).

It also times, in the same run: each model with and without test-time mirroring (`--tta/--no-tta`), and the
seconds per scan of the baseline for 1 scan and for 8 scans (the next scan is read and preprocessed on a thread
while one is predicted). With `--baseline-run DIR` (a run trained by bench/baseline_cpu.py), it reports the Dice
difference that mirroring makes for that baseline on the held-out cases.

    python bench/segment.py [--repeats 2] [--baseline-run DIR]

Measured 2026-11-28 on the 2-core CPU machine (quiet), IBSR_02, best of 2: segment with nnunet_2d 44.7 s,
nnUNetv2_predict + apply_postprocessing 51.0 s, ratio 0.876; segment with unet2d__dice_ce 4.2 s per scan.
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
    """Mean Dice over bench/baseline_cpu.py's held-out subjects of the run it trained, with and without mirroring."""
    import numpy as np
    from baseline_cpu import subjects  # the same subjects and split as the run was trained with

    from baselines.infer import Predictor
    from baselines.train import split_validation
    from ibsr_nnunet.data.volumes import read_volume
    from ibsr_nnunet.evaluation.metrics import case_metrics

    everything = subjects()
    _, held_out = split_validation([s[0] for s in everything], 2, seed=0)
    means = {}
    for tta in (False, True):
        predictor = Predictor(run, device="cpu", tta=tta)
        scores = []
        for case_id, image, label in (s for s in everything if s[0] in held_out):
            labels, _ = predictor(read_volume(image))
            reference = read_volume(label)
            scores += [row["dice"] for row in case_metrics(reference.array.astype(np.uint8), labels, reference.spacing)]
        means[tta] = float(np.mean(scores))
    return (f"mean Dice over {', '.join(held_out)} {means[False]:.4f} without, {means[True]:.4f} with "
            f"({means[True] - means[False]:+.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-run", help="a baseline run folder (bench/baseline_cpu.py) for the mirroring Dice")
    args = parser.parse_args()

    from ibsr_nnunet.nnunet.environment import EXT_TRAINER_FOLDER, configure
    from ibsr_nnunet.nnunet.paths import model_folder, trainer_name
    from ibsr_nnunet.nnunet.predict import find_best_configuration
    from ibsr_nnunet.core.atomic import write_json
    from ibsr_nnunet.core.provenance import dataset_fingerprint, record
    from ibsr_nnunet.nnunet.ensemble import model_record
    from ibsr_nnunet.core.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = Workspace.open(root / "ws")
        print("preparing: convert, plan 2d, train 2d fold 0 and unet2d with token schedules ...", flush=True)
        ibsr(ws.root, "convert", str(SHARED))
        ibsr(ws.root, "plan", "--configs", "2d")
        ibsr(ws.root, "train", "--fold", "0", "--config", "2d", "--epochs", "1", "--iterations-per-epoch", "2",
             "--device", "cpu")
        ibsr(ws.root, "baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", "1",
             "--iterations-per-epoch", "5", "--device", "cpu")
        # the nnU-Net model record `ensemble` would write, without predicting all of imagesTs
        trainer = trainer_name(1, 2)
        ws.export_env()
        configure(ws, 2)
        search = find_best_configuration(ws, trainer, ("2d",), folds=(0,), jobs=2, log=root / "search.log")
        pkl = search["sources"]["2d"] / "postprocessing.pkl"
        write_json(ws.predictions / "nnunet_2d" / "model.json",
                   model_record("nnunet_2d", trainer, configurations=("2d",), folds=(0,), postprocessing_pkl=pkl,
                                crossval_dice=search["results"]["2d"], axcodes=("R", "A", "S")))
        record(ws.predictions / "nnunet_2d", dataset_fingerprint(ws), model="nnunet_2d")

        staged = root / "nnunet-in"
        staged.mkdir()
        shutil.copy(SCAN, staged / "IBSR_02_0000.nii.gz")
        env = {**os.environ, **ws.nnunet_env(), "nnUNet_extTrainer": str(EXT_TRAINER_FOLDER)}
        plans = model_folder(ws, "2d", trainer) / "plans.json"
        theirs_cmds = [
            ["nnUNetv2_predict", "-i", str(staged), "-o", str(root / "nnunet-out"), "-d", str(ws.dataset_id), "-c", "2d",
             "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_progress_bar", "-npp", "1", "-nps", "1"],
            ["nnUNetv2_apply_postprocessing", "-i", str(root / "nnunet-out"), "-o", str(root / "nnunet-pp"),
             "-pp_pkl_file", str(pkl), "-np", "1", "-plans_json", str(plans)],
        ]
        def ours_cmd(model: str, tta: bool, scans: list[Path], out: str) -> list[str]:
            return [sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws.root), "segment", *map(str, scans),
                    "--output", str(root / out), "--model", model, "--device", "cpu", "--jobs", "1", "--no-qc",
                    "--tta" if tta else "--no-tta"]

        eight = root / "eight"
        eight.mkdir()
        for i in range(8):
            shutil.copy(SCAN, eight / f"scan{i}.nii.gz")
        times: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            for folder in ("nnunet-out", "nnunet-pp"):
                shutil.rmtree(root / folder, ignore_errors=True)
            times.setdefault("theirs", []).append(sum(timed(c, env) for c in theirs_cmds))
            for model in ("nnunet_2d", "unet2d__dice_ce"):
                for tta in (True, False):
                    key = f"{model} {'tta' if tta else 'no tta'}"
                    times.setdefault(key, []).append(timed(ours_cmd(model, tta, [SCAN], f"out-{key}-{repeat}")))
            times.setdefault("unet2d 8 scans", []).append(
                timed(ours_cmd("unet2d__dice_ce", False, [eight], f"out-eight-{repeat}")) / 8)
        volumes = json.dumps(open(root / "out-nnunet_2d tta-0" / "volumes.csv").read().splitlines()[1].split(",")[7:10])
        dice_note = tta_dice(Path(args.baseline_run)) if args.baseline_run else "(pass --baseline-run to measure it)"
        ours, theirs = times["nnunet_2d tta"], times["theirs"]

    print(f"full-size scan {SCAN.name} (256×128×256), CPU, {os.cpu_count()} cores; best of {args.repeats}")
    print(f"  ibsr-nnunet segment, nnunet_2d (1 fold):        {min(ours):7.1f} s   (all: {[round(t, 1) for t in ours]})")
    print(f"  nnUNetv2_predict + apply_postprocessing:         {min(theirs):7.1f} s   (all: {[round(t, 1) for t in theirs]})")
    print(f"  overhead ratio ours / nnU-Net's:                 {min(ours) / min(theirs):7.3f}   (target <= 1.05)")
    for key in ("nnunet_2d tta", "nnunet_2d no tta", "unet2d__dice_ce tta", "unet2d__dice_ce no tta"):
        print(f"  segment, {key:24s}                {min(times[key]):7.1f} s")
    for model in ("nnunet_2d", "unet2d__dice_ce"):
        print(f"  mirroring costs {model}: {min(times[model + ' tta']) / min(times[model + ' no tta']):.2f}x")
    print(f"  unet2d__dice_ce, seconds per scan: 1 scan {min(times['unet2d__dice_ce no tta']):.1f} s, "
          f"8 scans {min(times['unet2d 8 scans']):.1f} s (whole command / 8)")
    print(f"  Dice difference mirroring makes for the baseline: {dice_note}")
    print(f"  nnunet_2d volumes CSF/GM/WM mL (token training): {volumes}")


if __name__ == "__main__":
    main()

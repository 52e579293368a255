"""CPU time-to-accuracy bench: unet2d + dice_ce with the CPU defaults on the real IBSR18 Training_Set.

Trains for --minutes (12) on 8 of the 10 labelled subjects (the trainer keeps one of those 8, IBSR_16, for its
internal validation), holding out 2 subjects chosen by seed 0 (IBSR_08, IBSR_09), then predicts those 2 with the
same train() and predict_files() the CLI uses and prints per-class Dice, training iterations per second and
inference seconds per volume.

    python bench/baseline_cpu.py [--minutes 12] [--out DIR] [--set width=24 --set augment=true ...]

Measured 2026-11-28 on this machine's 2 shared Xeon cores (AMX bf16), 12 minutes, unet2d + dice_ce, width 16
(1.94 M parameters), 128×128 patches, batch 8, Adam 3e-3 with 100 warm-up iterations and time-aware cosine decay,
a third of the patches centred on CSF, whole-plane inference windows on the brain's bounding box:
    no augmentation (the CPU default):  CSF 0.9412  GM 0.9357  WM 0.9471  mean 0.9413
        (IBSR_08 0.9240/0.9285/0.9438, IBSR_09 0.9583/0.9428/0.9505); 3233 iterations, 4.49 it/s; 1.2 s/volume
    with augmentation (--set augment=true):  CSF 0.9092  GM 0.9173  WM 0.9223  mean 0.9163;
        2592 iterations, 3.60 it/s (other jobs were loading the cores); 1.4 s/volume
Two earlier runs with torch fixed at 2 threads reached 0.14 it/s while other jobs shared the cores (OpenMP threads
spin waiting for a preempted sibling): hence baselines.threads.ThreadTuner, which picks 1 or 2 threads as it goes.
Iterations per second count data loading and validation; the cores are shared, so expect ±50 % between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from baselines.data import slicing_axis
from baselines.infer import predict_files
from baselines.options import TrainOptions, device_defaults
from baselines.train import dice_per_class, split_validation, train
from ibsr_nnunet.core.errors import Requeue, Stalled
from ibsr_nnunet.core.vocabulary import TISSUES
from ibsr_nnunet.data.volumes import read_volume

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRAINING_SET = SHARED / "data" / "ibsr18" / "Training_Set"


def subjects() -> list[tuple[str, Path, Path]]:
    found = [(d.name, d / f"{d.name}.nii.gz", d / f"{d.name}_seg.nii.gz") for d in sorted(TRAINING_SET.glob("IBSR_*"))]
    if len(found) != 10:
        raise SystemExit(f"expected the 10 labelled subjects under {TRAINING_SET}, found {len(found)}")
    return found


def parse_value(field: dataclasses.Field, text: str):
    kind = {"int": int, "float": float, "bool": lambda s: s.lower() in ("1", "true", "yes")}
    for name, convert in kind.items():
        if name in str(field.type):
            return convert(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget in wall-clock minutes")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run and predictions (default: temp)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one TrainOptions field, e.g. width=24 (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    overrides = {}
    known = {f.name: f for f in dataclasses.fields(TrainOptions)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"--set {item}: TrainOptions has no field {key!r}")
        overrides[key] = parse_value(known[key], value)
    options = TrainOptions(**{**device_defaults("cpu"), "model": "unet2d", "loss": "dice_ce", "epochs": None,
                              "minutes": args.minutes, "device": "cpu", "threads": 0, "seed": 0, "val_cases": 1,
                              **overrides})
    everything = subjects()
    train_ids, test_ids = split_validation([s[0] for s in everything], 2, seed=0)
    out = args.out or Path(tempfile.mkdtemp(prefix="baseline_cpu_"))
    iterations = 0

    def count() -> None:
        nonlocal iterations
        iterations += 1

    def report(row: dict) -> None:
        print(f"epoch {row['epoch']}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
              f"dice {row['val_dice']:.4f} lr {row['lr']} at {row['seconds']:.0f}s", flush=True)

    print(f"options: {json.dumps(dataclasses.asdict(options))}\ntrain {train_ids}, held out {test_ids}, out {out}",
          flush=True)
    started = time.perf_counter()
    try:
        result = train(out / "run", [s for s in everything if s[0] in train_ids], options, on_epoch=report,
                       on_iteration=count)
    except (Requeue, Stalled):
        raise SystemExit(f"interrupted after saving {out / 'run'}; run again with --out {out} to resume") from None
    train_wall = time.perf_counter() - started
    started = time.perf_counter()
    held_out = [s for s in everything if s[0] in test_ids]
    predict_files(out / "run", [(s[0], s[1]) for s in held_out], out / "predictions", device="cpu")
    per_volume = (time.perf_counter() - started) / len(held_out)
    scores = []
    for case_id, _, label_path in held_out:
        prediction = torch.from_numpy(read_volume(out / "predictions" / f"{case_id}.nii.gz").array.astype(np.int64))
        label = torch.from_numpy(np.asarray(read_volume(label_path).array).astype(np.int64))
        scores.append(dice_per_class(prediction, label))
        print(f"{case_id}: " + ", ".join(f"{c} {d:.4f}" for c, d in zip(TISSUES.values(), scores[-1])))
    mean = np.mean(scores, axis=0)
    print(" ".join(f"{c} {d:.4f}" for c, d in zip(TISSUES.values(), mean)) + f" | mean {mean.mean():.4f}")
    print(f"{iterations} iterations in {train_wall:.0f}s ({iterations / train_wall:.2f} it/s including data loading "
          f"and validation), {result.epochs_done} epochs, best val loss {result.best_val_loss:.4f}; "
          f"inference {per_volume:.1f} s/volume; slicing axis {slicing_axis(read_volume(held_out[0][1]).spacing)}")


if __name__ == "__main__":
    main()

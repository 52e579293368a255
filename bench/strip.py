"""Skull stripping side by side: `ibsr-nnunet segment` with and without `--strip` on the shared IBSR scans (already
skull-stripped) and on synthetic heads built around the held-out ones (data/phantom.py `with_head`), all with one
unet2d + dice_ce trained here on the shared Training_Set for a fixed number of iterations.

Printed, per scan: the agreement (Dice per tissue) of the maps with and without --strip; per held-out scan: Dice
against the true labels of the stored scan without and with --strip, of its synthetic head with and without
--strip, and of the head cut by the stored scan's own brain (head_ideal: the head's blur and noise, no shells: what
a perfect stripping would give); the head's mask against the stored scan's brain (share kept, Dice); TIV; and
seconds per scan with and without stripping (whole commands, so start-up is in both).

    python bench/strip.py [--epochs 8] [--iterations 100] [--workspace DIR]

--workspace keeps the converted and trained workspace in DIR; a second run with the same DIR reuses it.
Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ibsr_nnunet.core.vocabulary import TISSUES
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.phantom import with_head
from ibsr_nnunet.data.volumes import read_volume

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ibsr18"
MODEL = "unet2d__dice_ce"


def cli(ws: Path, *args: str) -> float:
    """One `ibsr-nnunet` command in a fresh process; its seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws), *args], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"ibsr-nnunet {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 2 * float((a & b).sum()) / float(total) if total else 1.0


def labels(path: Path) -> np.ndarray:
    return np.asarray(read_volume(path).array).astype(np.uint8)


def per_tissue(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    scores = {name: dice(a == code, b == code) for code, name in TISSUES.items()}
    return {**scores, "mean": float(np.mean(list(scores.values())))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--workspace", type=Path, default=None, help="keep (and reuse) the trained workspace here")
    args = parser.parse_args()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="bench-strip-"))
    ws = Workspace.open(root / "ws")
    if not (ws.baselines / MODEL / "best.pt").is_file():
        print(f"convert {SHARED} and train {MODEL} for {args.epochs} × {args.iterations} iterations ...", flush=True)
        cli(ws.root, "convert", str(SHARED))
        cli(ws.root, "baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", str(args.epochs),
            "--iterations-per-epoch", str(args.iterations), "--device", "cpu")
    scans = sorted(SHARED.glob("*_Set/IBSR_*/IBSR_??.nii.gz"))
    heldout = ws.cases("heldout")
    heads = root / "heads"
    heads.mkdir(exist_ok=True)
    ideal = root / "ideal"  # the head cut by the stored scan's own brain: blur and noise of the head, no shells
    ideal.mkdir(exist_ok=True)
    for case, image, _ in heldout:
        volume = read_volume(image)
        array = np.asarray(volume.array)
        target = heads / f"{case}_head.nii.gz"
        head = with_head(array, volume.spacing)
        nib.save(nib.Nifti1Image(head, volume.affine), str(target))
        cut = np.where(ndimage.binary_fill_holes(array != 0), head, 0).astype(np.float32)
        nib.save(nib.Nifti1Image(cut, volume.affine), str(ideal / f"{case}_head.nii.gz"))
    runs = {"plain": (scans, ()), "stripped": (scans, ("--strip",)), "head": (sorted(heads.glob("*.nii.gz")), ()),
            "head_stripped": (sorted(heads.glob("*.nii.gz")), ("--strip",)),
            "head_ideal": (sorted(ideal.glob("*.nii.gz")), ())}
    seconds = {}
    for name, (inputs, extra) in runs.items():
        out = root / f"out_{name}"
        shutil.rmtree(out, ignore_errors=True)  # a re-run must time the work, not segment's reuse
        print(f"segment {len(inputs)} scans: {name} ...", flush=True)
        seconds[name] = cli(ws.root, "segment", *map(str, inputs), "--output", str(out), "--model", MODEL,
                            "--device", "cpu", "--no-qc", *extra) / len(inputs)

    rows = []
    for scan in scans:
        plain, stripped = (labels(root / f"out_{r}" / f"{scan.name[:-7]}_tissue.nii.gz") for r in ("plain", "stripped"))
        rows.append({"scan": scan.name[:-7], **per_tissue(plain, stripped)})
    agreement = pd.DataFrame(rows).set_index("scan")
    print("\nagreement of the maps with and without --strip (Dice per tissue), stored (already stripped) scans:")
    print(agreement.round(4).to_string())
    lowest = agreement[list(TISSUES.values())].min().min()
    print(f"lowest mean {agreement['mean'].min():.4f}, lowest tissue {lowest:.4f}")

    rows = []
    for case, image, label in heldout:
        truth = labels(label)
        brain = ndimage.binary_fill_holes(np.asarray(read_volume(image).array) != 0)
        mask = labels(root / "out_head_stripped" / f"{case}_head_brainmask.nii.gz").astype(bool)
        table = pd.read_csv(root / "out_head_stripped" / "volumes.csv").set_index("scan")
        rows.append({"case": case,
                     **{f"{r} mean": per_tissue(labels(root / f"out_{r}" / f"{n}_tissue.nii.gz"), truth)["mean"]
                        for r, n in (("plain", case), ("stripped", case), ("head", f"{case}_head"),
                                     ("head_stripped", f"{case}_head"), ("head_ideal", f"{case}_head"))},
                     "mask kept": float((mask & brain).sum() / brain.sum()), "mask Dice": dice(mask, brain),
                     "tiv_ml": float(table.loc[f"{case}_head", "tiv_ml"])})
    print("\nheld-out Dice against the true labels (mean over CSF, GM, WM); the head's mask against the stored brain:")
    print(pd.DataFrame(rows).set_index("case").round(4).to_string())
    print("\nseconds per scan (whole commands): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"stripping adds {seconds['stripped'] - seconds['plain']:.1f} s per stored scan")


if __name__ == "__main__":
    main()

"""Robustness of a trained model to how scans from elsewhere differ, and how well segment's QC score tells which maps
to check: the shared held-out pair segmented as stored and in variants, scored against their true labels.

Variants of each held-out scan (all skull-stripped, as IBSR18 is; noise and bias only inside the brain):
    stored; axes permuted and flipped (affine exact); intensities × 4; a smooth multiplicative bias field (±20 %,
    and ±40 %); Gaussian noise with σ = 2.5, 5, 10, 20, 30, 40 and 60 % of the brain's 99th percentile; gamma 0.6, 1.6;
    resampled to 0.7, 1, 1.2 and 1.5 mm isotropic (linear), each map carried back to the stored grid (nearest) to be
    scored, with the ceiling of that round trip beside it (the true labels resampled there and back).
Printed: Dice per tissue and its mean per variant (mean over the cases), the drop against stored, the QC score,
and Spearman's ρ between the QC score and the true mean Dice over every (variant, case).

    python bench/robustness.py --workspace DIR [--model unet2d__dice_ce] [--no-resample] [--variants A,B,...]

--no-resample: baselines predict the isotropic variants at their own spacing instead of resampling them to the
training spacing first (segment --no-resample), to measure what that resampling gains. --variants: only these
(e.g. stored,noise_5,iso_1mm); the default is every one.

DIR is a workspace converted from the shared IBSR18 data with the model trained (bench/strip.py --workspace DIR
makes one). Numbers: bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, stats

from ibsr_nnunet.core.vocabulary import TISSUES
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.volumes import read_volume

NOISE = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6)
ISOTROPIC = (0.7, 1.0, 1.2, 1.5)  # mm


def bias_field(shape: tuple[int, ...], amplitude: float, seed: int) -> np.ndarray:
    """A smooth multiplicative field from 1 - amplitude to 1 + amplitude."""
    coarse = np.random.default_rng(seed).normal(size=(4, 4, 4))
    smooth = ndimage.zoom(coarse, [n / 4 for n in shape], order=3)[tuple(slice(0, n) for n in shape)]
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (1 - amplitude + 2 * amplitude * smooth).astype(np.float32)


def resampled(array: np.ndarray, zooms: np.ndarray, order: int) -> np.ndarray:
    return ndimage.zoom(array, zooms, order=order, grid_mode=True, mode="grid-constant")


def back_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A map on an isotropic grid back onto the stored grid (nearest)."""
    back = resampled(array, [n / m for n, m in zip(shape, array.shape)], 0)
    out = np.zeros(shape, back.dtype)
    region = tuple(slice(0, min(n, m)) for n, m in zip(shape, back.shape))
    out[region] = back[region]
    return out


def variants(image: Path, folder: Path) -> dict[str, Path]:
    """Every variant of one scan written into `folder`; name -> file."""
    stored = nib.load(str(image))
    array = np.asanyarray(stored.dataobj).astype(np.float32).reshape(stored.shape[:3])
    brain = array != 0
    high = float(np.percentile(array[brain], 99))
    rng = np.random.default_rng(0)
    made = {}

    def save(name: str, data: np.ndarray, affine=stored.affine) -> None:
        made[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(made[name]))

    save("stored", array)
    permuted, affine = np.transpose(array, (1, 2, 0)), stored.affine[:, [1, 2, 0, 3]].copy()
    for axis in (0, 2):  # flipped too, with every voxel kept at its place in the world
        affine[:, 3] += affine[:, axis] * (permuted.shape[axis] - 1)
        affine[:, axis] = -affine[:, axis]
        permuted = np.flip(permuted, axis)
    save("permuted", permuted, affine)
    save("intensity_x4", array * 4)
    for amplitude in (0.2, 0.4):
        save(f"bias_{int(amplitude * 100)}", array * bias_field(array.shape, amplitude, seed=1))
    for sigma in NOISE:
        save(f"noise_{sigma * 100:g}", np.where(brain, array + rng.normal(0, sigma * high, array.shape), 0))
    for gamma in (0.6, 1.6):
        save(f"gamma_{gamma:g}", np.where(brain, high * (np.clip(array, 0, None) / high) ** gamma, 0))
    for size in ISOTROPIC:
        iso = resampled(array, np.abs(np.diag(stored.affine)[:3]) / size, 1)
        affine = stored.affine.copy()
        affine[:3, :3] = np.diag(np.sign(np.diag(stored.affine)[:3]) * size)
        save(f"iso_{size:g}mm", iso, affine)
    return made


def dice_per_tissue(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    scores = {}
    for code, name in TISSUES.items():
        a, b = prediction == code, truth == code
        scores[name] = 2 * float((a & b).sum()) / float(a.sum() + b.sum()) if a.any() or b.any() else 1.0
    return {**scores, "mean": float(np.mean(list(scores.values())))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True, help="converted shared IBSR18, model trained")
    parser.add_argument("--model", default="unet2d__dice_ce")
    parser.add_argument("--no-resample", action="store_true", help="segment --no-resample")
    parser.add_argument("--variants", default="", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    ws = Workspace.open(args.workspace)
    root = args.workspace.parent / ("robustness-no-resample" if args.no_resample else "robustness")
    shutil.rmtree(root, ignore_errors=True)
    cases = {}
    wanted = set(filter(None, args.variants.split(",")))
    for case, image, label in ws.cases("heldout"):
        (root / case).mkdir(parents=True)
        made = variants(image, root / case)
        if unknown := wanted - set(made):
            raise SystemExit(f"--variants: {', '.join(sorted(unknown))} unknown; choose from {', '.join(made)}")
        cases[case] = ({k: v for k, v in made.items() if not wanted or k in wanted}, label)
    out = root / "out"
    inputs = [str(p) for made, _ in cases.values() for p in made.values()]
    print(f"segment {len(inputs)} scans with {args.model} ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", "--workspace", str(ws.root), "segment", *inputs,
                           "--output", str(out), "--model", args.model, "--device", "cpu", "--no-qc",
                           "--no-resample" if args.no_resample else "--resample"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"segment failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    table = pd.read_csv(out / "volumes.csv")
    by_input = {Path(row["input"]).resolve(): row for _, row in table.iterrows()}
    rows = []
    for case, (made, label) in cases.items():
        truth = np.asarray(read_volume(label).array).astype(np.uint8)
        for name, path in made.items():
            row = by_input[path.resolve()]
            predicted = np.asarray(read_volume(Path(row["output"])).array).astype(np.uint8)
            if name == "permuted":  # back from the permuted and flipped grid: undo the flips, then the permutation
                predicted = np.flip(np.flip(predicted, 2), 0).transpose(np.argsort((1, 2, 0)))
            if name.startswith("iso_"):
                predicted = back_to(predicted, truth.shape)
            rows.append({"variant": name, "case": case, **dice_per_tissue(predicted, truth),
                         "qc_score": float(row["qc_score"]), "qc_flags": str(row["qc_flags"])})
        for size in (s for s in ISOTROPIC if not wanted or f"iso_{s:g}mm" in wanted):
            zooms = np.abs(np.diag(nib.load(str(label)).affine)[:3]) / size
            ceiling = back_to(resampled(truth, zooms, 0), truth.shape)
            rows.append({"variant": f"iso_{size:g}mm labels round trip", "case": case,
                         **dice_per_tissue(ceiling, truth)})
    frame = pd.DataFrame(rows)
    columns = [*TISSUES.values(), "mean", "qc_score"]
    summary = frame.groupby("variant", sort=False)[columns].mean()
    if "stored" in summary.index:
        summary.insert(4, "drop", summary["mean"] - summary.loc["stored", "mean"])
    pd.set_option("display.width", 200)
    print(summary.round(4).to_string())
    scored = frame.dropna(subset=["qc_score"])
    rho = stats.spearmanr(scored["qc_score"], scored["mean"])
    print(f"\nSpearman rho between qc_score and the true mean Dice over {len(scored)} (variant, case): "
          f"{rho.statistic:.3f} (p = {rho.pvalue:.2g})")
    mild = scored[~scored["variant"].isin([f"noise_{s * 100:g}" for s in NOISE if s > 0.2])]
    rho = stats.spearmanr(mild["qc_score"], mild["mean"])
    print(f"the same without noise above 20 % ({len(mild)} rows): {rho.statistic:.3f} (p = {rho.pvalue:.2g})")
    frame.to_csv(root / "robustness.csv", index=False)
    print(f"every row: {root / 'robustness.csv'}")


if __name__ == "__main__":
    main()

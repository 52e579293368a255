"""Benchmark: `case_metrics` on the 10 labelled IBSR18 volumes against SimpleITK's overlap and Hausdorff filters.

Each reference is scored against a perturbed copy (deterministic seed: CSF dilated, WM's outer layer turned to GM, the
map shifted a voxel, 5 stray voxels per class) for CSF, GM and WM, by both sides in the same process, case after
case; ours also computes HD95, AVD and NSD. Prints both times, their ratio for the metric set SimpleITK is compared
on (target: ours at least 3x faster without NSD, which SimpleITK has no filter for), NSD's added cost as a share of our
time without it (target: at most 20 %), and the largest differences in Dice and HD between the two.
NSD's cost is the counting of the surface distances that HD95 already needs; it is timed on its own, per class, and
subtracted from case_metrics' time to give our time for Dice, HD, HD95 and AVD.
SimpleITK starts from the same numpy arrays, so its time includes making images and binary masks from them.
Measured at load average 21-27 (2 cores), 2 rounds: ours 78.28 s / 56.73 s (NSD 2.2 ms of it), SimpleITK 605.70 s /
508.99 s: 7.7x / 9.0x; NSD adds 0.004 % to our time.
Run: python bench/metrics.py [--rounds 3] [--source ../shared/data/ibsr18] (numbers: bench/README.md)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ibsr_nnunet.core.vocabulary import TISSUES
from ibsr_nnunet.evaluation import metrics
from ibsr_nnunet.evaluation.metrics import case_metrics

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ibsr18"


def perturb(reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible imperfect segmentation: CSF dilated, WM eroded into GM, the whole map shifted a voxel, strays."""
    prediction = reference.copy()
    prediction[ndimage.binary_dilation(reference == 1) & (reference != 0)] = 1
    wm = reference == 3
    prediction[wm & ~ndimage.binary_erosion(wm)] = 2
    prediction = np.roll(prediction, rng.choice([-1, 1]), axis=int(rng.integers(3)))
    for label in TISSUES:
        # A few stray voxels of each class anywhere in the volume, to give the Hausdorff distance something to find.
        strays = tuple(rng.integers(0, n, size=5) for n in prediction.shape)
        prediction[strays] = label
    return prediction


def ours(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...]) -> dict[int, tuple[float, float]]:
    return {row["label"]: (row["dice"], row["hd"]) for row in case_metrics(reference, prediction, spacing)}


def nsd_seconds(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...], repeats: int = 20) -> float:
    """Seconds case_metrics spends on NSD in one case: counting each class's surface distances (computed beforehand,
    as case_metrics computes them once for HD, HD95 and NSD), the median of `repeats` timings."""
    distances = [metrics._surface_distances(reference == label, prediction == label, spacing) for label in TISSUES]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for each in distances:
            metrics._nsd(each, metrics.NSD_TOLERANCE)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def simpleitk(reference: np.ndarray, prediction: np.ndarray,
              spacing: tuple[float, ...]) -> dict[int, tuple[float, float]]:
    images = []
    for array in (reference, prediction):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing[::-1])  # SimpleITK orders axes the other way round from numpy
        images.append(image)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(*images)
    result = {}
    for label in TISSUES:
        hausdorff = sitk.HausdorffDistanceImageFilter()
        hausdorff.Execute(images[0] == label, images[1] == label)
        result[label] = (overlap.GetDiceCoefficient(label), hausdorff.GetHausdorffDistance())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases = []
    for path in sorted(args.source.glob("Training_Set/*/*_seg.nii.gz")):
        image = nib.load(path)
        reference = np.asarray(image.dataobj)[..., 0].astype(np.uint8)
        spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
        cases.append((reference, perturb(reference, np.random.default_rng(len(cases))), spacing))
    print(f"{len(cases)} labelled cases from {args.source}; SimpleITK threads: "
          f"{sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    our_times, nsd_times, sitk_times, dice_diff, hd_diff = [], [], [], 0.0, 0.0
    for round_ in range(args.rounds):
        our_time = nsd_time = sitk_time = 0.0
        for reference, prediction, spacing in cases:
            start = time.perf_counter()
            mine = ours(reference, prediction, spacing)
            our_time += time.perf_counter() - start
            nsd_time += nsd_seconds(reference, prediction, spacing)
            start = time.perf_counter()
            theirs = simpleitk(reference, prediction, spacing)
            sitk_time += time.perf_counter() - start
            for label in TISSUES:
                dice_diff = max(dice_diff, abs(mine[label][0] - theirs[label][0]))
                hd_diff = max(hd_diff, abs(mine[label][1] - theirs[label][1]))
        our_times.append(our_time)
        nsd_times.append(nsd_time)
        sitk_times.append(sitk_time)
        print(f"round {round_ + 1}: ours {our_time:.2f} s (NSD {nsd_time * 1e3:.1f} ms of it), "
              f"SimpleITK {sitk_time:.2f} s")
    ours_median, sitk_median = statistics.median(our_times), statistics.median(sitk_times)
    nsd_median = statistics.median(nsd_times)
    previous = ours_median - nsd_median
    print(f"median: ours {ours_median:.2f} s with NSD, {previous:.2f} s without (Dice, HD, HD95, AVD); "
          f"SimpleITK {sitk_median:.2f} s (Dice, HD); SimpleITK/ours without NSD {sitk_median / previous:.1f}x "
          f"(with NSD {sitk_median / ours_median:.1f}x)")
    print(f"NSD adds {nsd_median * 1e3:.1f} ms = {100 * nsd_median / previous:.2g} % to our time "
          f"({nsd_median / len(cases) * 1e3:.2f} ms per case)")
    print(f"largest difference over {len(cases) * len(TISSUES)} case-classes: "
          f"Dice {dice_diff:.1e}, HD {hd_diff:.1e} mm")


if __name__ == "__main__":
    main()

"""Benchmark: `case_metrics` on the 10 labelled IBSR18 volumes against SimpleITK's overlap and Hausdorff filters.

Each reference is scored against a perturbed copy (deterministic seed: CSF dilated, WM's outer layer turned to GM, the
map shifted a voxel, 5 stray voxels per class) for CSF, GM and WM, by both sides in the same process, case after
case; ours also computes HD95 and AVD. Prints both times, their ratio (target: ours at least 3x faster) and the
largest differences in Dice and HD between the two.
SimpleITK starts from the same numpy arrays, so its time includes making images and binary masks from them.
Measured on 2 cores shared with other jobs (load average ~9), SimpleITK on 2 threads, median of 3 rounds over 10
cases x 3 classes: ours 8.18 s, SimpleITK 66.81 s, ratio 8.2x; largest differences Dice 1.1e-16, HD 1.4e-14 mm.
Run: python bench/metrics.py [--rounds 3] [--source ../shared/data/ibsr18]
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
    our_times, sitk_times, dice_diff, hd_diff = [], [], 0.0, 0.0
    for round_ in range(args.rounds):
        our_time = sitk_time = 0.0
        for reference, prediction, spacing in cases:
            start = time.perf_counter()
            mine = ours(reference, prediction, spacing)
            our_time += time.perf_counter() - start
            start = time.perf_counter()
            theirs = simpleitk(reference, prediction, spacing)
            sitk_time += time.perf_counter() - start
            for label in TISSUES:
                dice_diff = max(dice_diff, abs(mine[label][0] - theirs[label][0]))
                hd_diff = max(hd_diff, abs(mine[label][1] - theirs[label][1]))
        our_times.append(our_time)
        sitk_times.append(sitk_time)
        print(f"round {round_ + 1}: ours {our_time:.2f} s, SimpleITK {sitk_time:.2f} s")
    ours_median, sitk_median = statistics.median(our_times), statistics.median(sitk_times)
    print(f"median: ours {ours_median:.2f} s, SimpleITK {sitk_median:.2f} s, "
          f"SimpleITK/ours {sitk_median / ours_median:.1f}x")
    print(f"largest difference over {len(cases) * len(TISSUES)} case-classes: "
          f"Dice {dice_diff:.1e}, HD {hd_diff:.1e} mm")


if __name__ == "__main__":
    main()

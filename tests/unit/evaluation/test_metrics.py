"""Metrics against hand-computed cases, MedPy's HD95 recipe, SimpleITK's Dice and Hausdorff filters and MONAI's NSD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.vocabulary import TISSUES
from ibsr_nnunet.evaluation.metrics import avd, case_metrics, dice, hausdorff, nsd

SPACING = (0.5, 1.0, 2.0)


def cube(shape=(12, 12, 12), corner=(2, 2, 2), size=4) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(c, c + size) for c in corner)] = True
    return mask


def ball(radius: float, shape=(25, 25, 25)) -> np.ndarray:
    offsets = np.indices(shape) - np.array(shape).reshape(-1, 1, 1, 1) // 2
    return (offsets**2).sum(axis=0) <= radius**2


def sitk_image(array: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing([float(s) for s in reversed(spacing)])  # SimpleITK orders axes x, y, z: numpy's reversed
    return image


def sitk_hausdorff(ref_mask, pred_mask, spacing) -> float:
    measure = sitk.HausdorffDistanceImageFilter()
    measure.Execute(sitk_image(ref_mask, spacing), sitk_image(pred_mask, spacing))
    return measure.GetHausdorffDistance()


def medpy_hd95(ref_mask, pred_mask, spacing) -> float:
    """MedPy's recipe, written independently: erosion-based surfaces, EDT over the whole array, union percentile."""
    structure = ndimage.generate_binary_structure(3, 1)
    ref_surface = ref_mask & ~ndimage.binary_erosion(ref_mask, structure)
    pred_surface = pred_mask & ~ndimage.binary_erosion(pred_mask, structure)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    return float(np.percentile(np.hstack([to_ref, to_pred]), 95))


@pytest.mark.parametrize("axis, hd", [(0, 1.0), (1, 2.0), (2, 4.0)])
def test_cube_shifted_two_voxels_along_each_axis(axis, hd):
    # 4^3 cubes overlapping in half: every distance runs along the shift axis, the largest is 2 voxels; 32 of the
    # 112 surface distances are 2 voxels, so the 95th percentile is that too.
    corner = [2, 2, 2]
    corner[axis] += 2
    ref, pred = cube(), cube(corner=corner)
    assert dice(ref, pred) == 0.5
    assert hausdorff(ref, pred, SPACING) == (hd, hd)
    assert avd(ref, pred) == 0.0


def test_rod_extension_gives_medpy_hd95_not_monai():
    # A 20-voxel rod against the same rod 5 voxels longer: 45 surface distances, 40 zeros then 1..5 voxels.
    # Union percentile: position 0.95 * 44 = 41.8 between 2 and 3 -> 2.8 voxels (MONAI's directed max gives 3.8).
    ref, pred = np.zeros((3, 3, 30), dtype=bool), np.zeros((3, 3, 30), dtype=bool)
    ref[1, 1, 2:22] = True
    pred[1, 1, 2:27] = True
    hd, hd95 = hausdorff(ref, pred, SPACING)
    assert hd == 5 * 2.0
    assert hd95 == pytest.approx(2.8 * 2.0, abs=1e-12)
    assert dice(ref, pred) == pytest.approx(40 / 45, abs=1e-15)
    assert avd(ref, pred) == 0.25


def test_one_far_voxel_sets_hd_but_not_hd95():
    ref = cube()
    pred = ref.copy()
    pred[11, 3, 3] = True  # 6 voxels beyond the cube's face at index 5 along axis 0
    assert hausdorff(ref, pred, SPACING) == (6 * 0.5, 0.0)
    assert dice(ref, pred) == 128 / 129


@pytest.mark.parametrize("inner, outer", [(5, 9), (3, 8)])
def test_concentric_spheres(inner, outer):
    ref, pred = ball(inner), ball(outer)
    hd, hd95 = hausdorff(ref, pred, (1.0, 1.0, 1.0))
    # Voxelisation puts the spheres' surface voxels up to a voxel off the ideal radii.
    assert outer - inner <= hd <= outer - inner + 1
    assert outer - inner - 1 <= hd95 <= hd
    assert hd == pytest.approx(sitk_hausdorff(ref, pred, (1.0, 1.0, 1.0)), abs=1e-6)


def test_cavity_counts_for_hd95_but_not_for_hd():
    # Filled ball against the same ball with a cavity: every voxel of the cavity is within sqrt(5) voxels of the
    # hollow ball (SimpleITK agrees), but the cavity wall is surface, 3 voxels or more from the ball's outer surface.
    ref = ball(6)
    pred = ref & ~ball(2)
    hd, hd95 = hausdorff(ref, pred, (1.0, 1.0, 1.0))
    assert hd == math.sqrt(5)
    assert hd == pytest.approx(sitk_hausdorff(ref, pred, (1.0, 1.0, 1.0)), abs=1e-6)
    assert hd95 == 3.0


@pytest.mark.parametrize("pred_size, expected", [(4, 0.0), (3, 37 / 64), (5, 61 / 64), (2, 56 / 64)])
def test_avd(pred_size, expected):
    assert avd(cube(), cube(size=pred_size)) == expected


@pytest.mark.parametrize("ref_empty, pred_empty, expected", [
    (True, True, {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "avd": math.nan}),
    (False, True, {"dice": 0.0, "hd": math.inf, "hd95": math.inf, "avd": 1.0}),
    (True, False, {"dice": 0.0, "hd": math.inf, "hd95": math.inf, "avd": math.nan}),
])
def test_empty_masks(ref_empty, pred_empty, expected):
    empty = np.zeros((12, 12, 12), dtype=bool)
    ref = empty if ref_empty else cube()
    pred = empty if pred_empty else cube()
    hd, hd95 = hausdorff(ref, pred, SPACING)
    got = {"dice": dice(ref, pred), "hd": hd, "hd95": hd95, "avd": avd(ref, pred)}
    assert got == pytest.approx(expected, nan_ok=True)


def test_case_metrics_rows():
    reference = np.zeros((12, 12, 12), dtype=np.int16)
    reference[cube()] = 3
    reference[cube(corner=(7, 7, 7), size=2)] = 1  # no GM in the reference
    prediction = np.zeros_like(reference)
    prediction[cube(corner=(4, 2, 2))] = 3
    prediction[cube(corner=(0, 0, 0), size=1)] = 2  # and no CSF in the prediction
    rows = case_metrics(reference, prediction, SPACING)
    assert [(r["label"], r["class"]) for r in rows] == list(TISSUES.items())
    assert rows == [
        {"class": "CSF", "label": 1, "dice": 0.0, "hd": math.inf, "hd95": math.inf, "avd": 1.0, "nsd": 0.0,
         "ref_voxels": 8, "pred_voxels": 0},
        {"class": "GM", "label": 2, "dice": 0.0, "hd": math.inf, "hd95": math.inf,
         "avd": pytest.approx(math.nan, nan_ok=True), "nsd": 0.0, "ref_voxels": 0, "pred_voxels": 1},
        {"class": "WM", "label": 3, "dice": 0.5, "hd": 1.0, "hd95": 1.0, "avd": 0.0, "nsd": 1.0,
         "ref_voxels": 64, "pred_voxels": 64},
    ]
    # the same WM shift (1 mm along axis 0) at a tolerance of 0.75 mm: see test_nsd_of_cubes_shifted_two_voxels
    assert case_metrics(reference, prediction, SPACING, nsd_tolerance=0.75)[2]["nsd"] == 80 / 112


@pytest.mark.parametrize("call", [
    lambda a, b: case_metrics(a, b, SPACING),
    lambda a, b: nsd(a, b, SPACING),
    lambda a, b: hausdorff(a, b, SPACING),
    lambda a, b: dice(a, b),
    lambda a, b: avd(a, b),
])
def test_shape_mismatch_refused(call):
    with pytest.raises(InputError, match=r"differ in shape \(\(12, 12, 12\) vs \(12, 12, 11\)\)"):
        call(cube(), cube(shape=(12, 12, 11)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0)])
def test_bad_spacing_refused(spacing):
    with pytest.raises(InputError, match="Spacing"):
        case_metrics(cube(), cube(), spacing)
    with pytest.raises(InputError, match="Spacing"):
        nsd(cube(), cube(), spacing)


@pytest.mark.parametrize("tolerance", [-0.5, math.inf, math.nan])
def test_bad_nsd_tolerance_refused(tolerance):
    with pytest.raises(InputError, match="NSD tolerance .* must be a finite distance in mm of 0 or more"):
        case_metrics(cube(), cube(), SPACING, nsd_tolerance=tolerance)


# 4^3 cubes shifted 2 voxels along one axis, spacing s along it and SPACING elsewhere. Each cube has 56 surface voxels;
# from the reference's to the prediction's surface: the far face (16) is 2s away, the ring next to it (12) s, the
# ring inside the prediction's face (12) and the 12 rim voxels of the near face (on the prediction's ring) 0, and the
# near face's 4 inner voxels min(s, 0.5 mm) (to the prediction's face, or sideways to its ring along axis 0). The
# prediction's distances mirror these: NSD = (24 + 24 [+ 4 + 4 if min(s,0.5) <= tau] [+ 12 + 12 if s <= tau]
# [+ 16 + 16 if 2s <= tau]) / 112.
@pytest.mark.parametrize("axis, tolerance, expected", [
    (0, 0.25, 48 / 112), (0, 0.5, 80 / 112), (0, 0.75, 80 / 112), (0, 1.0, 1.0),  # s = 0.5 mm
    (1, 0.25, 48 / 112), (1, 0.5, 56 / 112), (1, 1.0, 80 / 112), (1, 2.0, 1.0),  # s = 1 mm
    (2, 0.5, 56 / 112), (2, 1.0, 56 / 112), (2, 2.0, 80 / 112), (2, 3.9, 80 / 112), (2, 4.0, 1.0),  # s = 2 mm
])
def test_nsd_of_cubes_shifted_two_voxels(axis, tolerance, expected):
    corner = [2, 2, 2]
    corner[axis] += 2
    assert nsd(cube(), cube(corner=corner), SPACING, tolerance=tolerance) == expected
    assert nsd(cube(corner=corner), cube(), SPACING, tolerance=tolerance) == expected  # symmetric


def test_nsd_of_touching_cubes():
    # Two 4^3 cubes side by side along axis 0 (0.5 mm): the facing faces (16 voxels each) are 0.5 mm from the other
    # cube's face, the rings behind them (12 each) 1 mm, the next rings 1.5 mm, the far faces 2 mm.
    ref, pred = cube(shape=(14, 12, 12)), cube(shape=(14, 12, 12), corner=(6, 2, 2))
    assert nsd(ref, pred, SPACING, tolerance=0.49) == 0.0
    assert nsd(ref, pred, SPACING, tolerance=0.5) == 32 / 112  # the two facing faces, 16 voxels each
    assert nsd(ref, pred, SPACING, tolerance=1.0) == 56 / 112  # and the rings behind them, 12 each
    assert nsd(ref, pred, SPACING, tolerance=2.0) == 1.0
    assert nsd(ref, ref, SPACING, tolerance=0.0) == 1.0


@pytest.mark.parametrize("ref_empty, pred_empty, expected", [(True, True, 1.0), (False, True, 0.0), (True, False, 0.0)])
def test_nsd_of_empty_masks(ref_empty, pred_empty, expected):
    empty = np.zeros((12, 12, 12), dtype=bool)
    assert nsd(empty if ref_empty else cube(), empty if pred_empty else cube(), SPACING) == expected


def monai_nsd(ref_mask, pred_mask, spacing, tolerance, *, subvoxels=False) -> float:
    import torch
    # a test-only dependency (the [test] extra), slow to import
    compute_surface_dice = pytest.importorskip(
        "monai.metrics", reason="MONAI (pip install '.[test]') is needed to compare NSD with its compute_surface_dice"
    ).compute_surface_dice

    def onehot(mask):
        return torch.from_numpy(mask[None, None].astype(np.float32))

    value = compute_surface_dice(onehot(pred_mask), onehot(ref_mask), [tolerance], include_background=True,
                                 spacing=list(spacing), use_subvoxels=subvoxels)
    return float(value[0, 0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated argument, inside compute_surface_dice
@pytest.mark.parametrize("seed, smooth", [(0, 2.0), (1, 1.0), (2, 0.0), (3, 3.0)])
def test_random_volumes_nsd_matches_monai(seed, smooth):
    """MONAI's compute_surface_dice (use_subvoxels=False, its default) uses the same surface (mask minus its
    face-connected erosion, the array's edge counting as outside) and voxel-centre distances with `spacing`, and
    counts surface voxels, so it agrees with ours up to its float32 result: within 1e-6. Empty masks are not compared:
    MONAI gives NaN for both empty, we give 1."""
    rng = np.random.default_rng(seed)
    shape, spacing = (18, 22, 14), tuple(rng.uniform(0.5, 2.0, 3))
    reference, prediction = random_labels(rng, shape, smooth), random_labels(rng, shape, smooth)
    for tolerance in (0.7, 1.0, 2.5):
        rows = case_metrics(reference, prediction, spacing, nsd_tolerance=tolerance)
        for row in rows:
            ref_mask, pred_mask = reference == row["label"], prediction == row["label"]
            expected = monai_nsd(ref_mask, pred_mask, spacing, tolerance)
            assert 0 < expected < 1
            assert row["nsd"] == pytest.approx(expected, abs=1e-6)
            assert nsd(ref_mask, pred_mask, spacing, tolerance=tolerance) == row["nsd"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_deepmind_surfels_differ_by_the_surface_definition():
    """DeepMind's surface-distance (MONAI's use_subvoxels=True) puts surface elements on the voxel corners, weighted
    by their area, not on the centres of surface voxels. Two masks that touch face to face share those corners, so
    part of their surfaces is 0 mm apart there, while the centres of their facing voxels are a voxel apart: at a
    tolerance below one voxel our NSD of touching cubes is 0 and DeepMind's is not. On random smooth blobs the
    two differ by 0.02 to 0.2 at 1 mm (not checked here: there is no exact relation between the definitions)."""
    ref, pred = cube(shape=(14, 12, 12)), cube(shape=(14, 12, 12), corner=(6, 2, 2))
    assert nsd(ref, pred, SPACING, tolerance=0.25) == 0.0
    assert monai_nsd(ref, pred, SPACING, 0.25) == 0.0
    assert monai_nsd(ref, pred, SPACING, 0.25, subvoxels=True) > 0.3


def random_labels(rng, shape, smooth: float) -> np.ndarray:
    """Label volume 0-3 from (optionally smoothed) noise: smooth gives blobs, 0 gives speckle full of holes."""
    noise = rng.random(shape)
    if smooth:
        noise = ndimage.gaussian_filter(noise, smooth)
    return np.digitize(noise, np.quantile(noise, [0.4, 0.6, 0.8])).astype(np.uint8)


@pytest.mark.parametrize("seed, smooth", [(0, 2.0), (1, 1.0), (2, 0.0), (3, 3.0)])
def test_random_volumes_match_simpleitk_and_medpy(seed, smooth):
    rng = np.random.default_rng(seed)
    shape, spacing = (18, 22, 14), tuple(rng.uniform(0.5, 2.0, 3))
    reference, prediction = random_labels(rng, shape, smooth), random_labels(rng, shape, smooth)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk_image(reference, spacing), sitk_image(prediction, spacing))
    for row in case_metrics(reference, prediction, spacing):
        ref_mask, pred_mask = reference == row["label"], prediction == row["label"]
        assert row["dice"] == pytest.approx(overlap.GetDiceCoefficient(row["label"]), abs=1e-6)
        assert row["hd"] == pytest.approx(sitk_hausdorff(ref_mask, pred_mask, spacing), abs=1e-6)
        assert row["hd95"] == pytest.approx(medpy_hd95(ref_mask, pred_mask, spacing), abs=1e-9)

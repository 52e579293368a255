"""Resampling a scan far from the training spacing: when, onto which grid, and the probabilities carried back."""

import numpy as np
import pytest

from baselines.spacing import argmax_on, far_from, onto_shape, resampled_shape, to_spacing

TRAINING = (0.9375, 1.5, 0.9375)


@pytest.mark.parametrize("spacing, far", [
    (TRAINING, False),
    ((0.8370536, 1.5, 0.8370536), False),  # IBSR18's finest in-plane spacing: 0.89 of the median
    ((1.0, 1.5, 1.0), False),
    ((1.0, 1.0, 1.0), True),  # 1 mm isotropic: the slice axis is 1.5x finer
    ((0.9375, 1.25, 0.9375), False),  # 1.5 / 1.25 = 1.2: on the line, not beyond it
    ((0.9375, 1.24, 0.9375), True),
    ((1.2, 1.5, 1.2), True),  # 1.28x coarser in plane
    ((0.9375, 3.0, 0.9375), True),  # thick slices
])
def test_a_scan_is_far_when_some_axis_is_more_than_1_2_times_off(spacing, far):
    assert far_from(spacing, TRAINING) is far


def test_the_resampled_grid_covers_the_same_field_of_view():
    assert resampled_shape((256, 192, 256), (1.0, 1.0, 1.0), TRAINING) == (273, 128, 273)
    assert resampled_shape((10, 1, 4), (1.0, 1.0, 1.0), (2.0, 3.0, 1.0)) == (5, 1, 4)  # never below one voxel


def test_the_brain_keeps_its_intensity_up_to_its_edge_and_the_outside_stays_zero():
    image = np.zeros((8, 8, 8), np.float32)
    image[2:6, 2:6, 2:6] = 100.0
    out = to_spacing(image, (1.0, 1.0, 1.0), (2.0, 1.0, 0.5))
    assert out.shape == (4, 8, 16)
    inside = out != 0
    assert set(np.unique(out[inside])) == {100.0}  # zeros outside never blend into the brain's edge
    # the mask resampled and cut at one half: a 4-voxel cube is 2 voxels thick at 2 mm and 8 at 0.5 mm
    assert inside.sum() == 2 * 4 * 8
    np.testing.assert_array_equal(np.argwhere(inside).min(0), (1, 2, 4))


def test_onto_shape_aligns_the_outer_edges():
    coarse = np.array([0.2, 0.9], np.float32).reshape(1, 1, 2)
    fine = onto_shape(coarse, (1, 1, 4))
    # fine voxel centres at -0.25, 0.25, 0.75, 1.25 coarse voxels; beyond the centres the edge value holds
    np.testing.assert_allclose(fine.ravel(), [0.2, 0.375, 0.725, 0.9], atol=1e-6)


def test_probabilities_are_carried_back_before_the_argmax():
    tissue = np.array([0.2, 0.9], np.float32).reshape(1, 1, 2)
    probabilities = np.stack([1 - tissue, tissue])
    labels, sums, sure = argmax_on(probabilities, (1, 1, 4))
    np.testing.assert_array_equal(labels.ravel(), [0, 0, 1, 1])
    np.testing.assert_allclose(sums, [4 - 2.2, 2.2], atol=1e-5)  # soft voxel counts on the scan's own grid
    assert sure == pytest.approx((0.725 + 0.9) / 2, abs=1e-6)  # the mean top probability over the tissue voxels


def test_a_map_with_no_tissue_has_no_confidence():
    probabilities = np.stack([np.ones((2, 2, 2)), np.zeros((2, 2, 2))]).astype(np.float32)
    labels, sums, sure = argmax_on(probabilities, (4, 4, 4))
    assert not labels.any() and sums.tolist() == [64.0, 0.0] and np.isnan(sure)

"""core.orientation in memory: every axis permutation and flip (48 orientations) reorients to a target and back
voxel for voxel, with an affine that keeps each voxel at its world point and the axis codes expected."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ibsr_nnunet.core.orientation import (
    Reorientation,
    axcodes,
    common_axcodes,
    obliquity_degrees,
    towards,
)

SHAPE = (4, 5, 6)  # unequal sides: a wrong permutation cannot give the same shape
RAS = ("R", "A", "S")
OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
BASE_AFFINE = np.array([[0.9375, 0, 0, -60.0],
                        [0, 1.5, 0, 12.5],
                        [0, 0, 0.9375, -7.0],
                        [0, 0, 0, 1]])  # R, A, S with IBSR-like anisotropic voxels and an offset origin
ORIENTATIONS = [(perm, flips) for perm in itertools.permutations(range(3))
                for flips in itertools.product((False, True), repeat=3)]


def base_array() -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)  # every voxel's value is unique


def stored(perm: tuple[int, ...], flips: tuple[bool, ...]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The base voxels stored with axes permuted then flipped, the affine changed so that each voxel keeps its world
    point, and the axis codes that storage must have."""
    data = np.transpose(base_array(), perm)
    affine = BASE_AFFINE[:, list(perm) + [3]].copy()
    codes = [RAS[p] for p in perm]
    for axis, flip in enumerate(flips):
        if flip:
            affine[:, 3] += affine[:, axis] * (data.shape[axis] - 1)
            affine[:, axis] = -affine[:, axis]
            data = np.flip(data, axis)
            codes[axis] = OPPOSITE[codes[axis]]
    return np.ascontiguousarray(data), affine, tuple(codes)


def world_of_each_value(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Row v: the world point of the voxel holding value v."""
    index = np.argsort(data, axis=None)
    voxels = np.stack(np.unravel_index(index, data.shape), axis=1).astype(float)
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def ids(case) -> str:
    perm, flips = case
    return "".join(map(str, perm)) + "-" + "".join("f" if f else "." for f in flips)


def test_there_are_48_distinct_orientations():
    assert len({stored(perm, flips)[2] for perm, flips in ORIENTATIONS}) == 48


@pytest.mark.parametrize("case", ORIENTATIONS, ids=ids)
def test_axis_codes_follow_the_permutation_and_flips(case):
    data, affine, codes = stored(*case)
    assert axcodes(affine) == codes
    assert towards(affine, RAS) == Reorientation(codes, RAS)
    assert obliquity_degrees(affine) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("case", ORIENTATIONS, ids=ids)
def test_to_ras_and_back_is_voxel_for_voxel(case):
    data, affine, codes = stored(*case)
    turn = towards(affine, RAS)
    in_ras = turn.apply(data)
    assert in_ras.shape == SHAPE and np.array_equal(in_ras, base_array())
    assert np.array_equal(turn.undo(in_ras), data)
    assert turn.identity == (codes == RAS)


@pytest.mark.parametrize("case", ORIENTATIONS, ids=ids)
def test_the_new_affine_keeps_every_voxel_at_its_world_point(case):
    data, affine, codes = stored(*case)
    turn = towards(affine, RAS)
    new_affine = turn.affine(affine, data.shape)
    assert np.allclose(new_affine, BASE_AFFINE)
    assert axcodes(new_affine) == RAS
    assert np.allclose(world_of_each_value(turn.apply(data), new_affine), world_of_each_value(data, affine))


@pytest.mark.parametrize("case", ORIENTATIONS, ids=ids)
def test_from_ras_to_any_target_gives_its_codes_and_the_same_world(case):
    target_data, target_affine, target = stored(*case)
    turn = towards(BASE_AFFINE, target)
    data = turn.apply(base_array())
    new_affine = turn.affine(BASE_AFFINE, SHAPE)
    assert axcodes(new_affine) == target
    assert np.array_equal(data, target_data) and np.allclose(new_affine, target_affine)
    assert np.allclose(world_of_each_value(data, new_affine), world_of_each_value(base_array(), BASE_AFFINE))
    assert np.array_equal(turn.undo(data), base_array())


@pytest.mark.parametrize("case", ORIENTATIONS[1::7], ids=ids)
def test_undo_carries_a_probability_map_back_on_its_first_three_axes(case):
    data, affine, codes = stored(*case)
    turn = towards(affine, RAS)
    channels = np.stack([base_array(), -base_array()], axis=-1)  # in RAS, one channel per class
    back = turn.undo(channels)
    assert back.shape == (*data.shape, 2)
    assert np.array_equal(back[..., 0], data) and np.array_equal(back[..., 1], -data)


def test_the_identity_returns_the_same_array_and_affine():
    turn = towards(BASE_AFFINE, RAS)
    data = base_array()
    assert turn.identity and turn.apply(data) is data and turn.undo(data) is data
    assert turn.affine(BASE_AFFINE, SHAPE) is BASE_AFFINE


@pytest.mark.parametrize("degrees", [5.0, 20.0])
def test_an_oblique_affine_goes_to_the_nearest_axis_aligned_orientation(degrees):
    turn = np.radians(degrees)  # about the S axis
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    affine = BASE_AFFINE.copy()
    affine[:3, :3] = rotation @ BASE_AFFINE[:3, :3]
    assert obliquity_degrees(affine) == pytest.approx(degrees, abs=1e-6)
    assert towards(affine, RAS) == Reorientation(RAS, RAS)


def test_common_axcodes_is_the_majority():
    las = stored((0, 1, 2), (True, False, False))[1]
    assert common_axcodes([BASE_AFFINE, las, BASE_AFFINE]) == RAS
    assert common_axcodes([las, las, BASE_AFFINE]) == ("L", "A", "S")

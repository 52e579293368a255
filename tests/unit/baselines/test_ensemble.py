"""baselines.ensemble and the view names of baselines.registry: the fusion arithmetic on known probabilities, the
definition's refusals and the names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from baselines.ensemble import Definition, ensemble_problem, fuse, read_definition, write_definition
from baselines.registry import baseline_name, baseline_problem, parse_baseline_name, train_options_of
from ibsr_nnunet.core.errors import InputError


def voxels(*columns: tuple[float, ...]) -> np.ndarray:
    """Class probabilities (C, N) of N voxels given column by column."""
    return np.array(columns, np.float32).T


# three members, four voxels, classes 0..3 (each column one voxel's probabilities)
A = voxels((0.1, 0.6, 0.2, 0.1), (0.7, 0.1, 0.1, 0.1), (0.0, 0.5, 0.3, 0.2), (0.25, 0.25, 0.25, 0.25))
B = voxels((0.1, 0.1, 0.7, 0.1), (0.1, 0.1, 0.1, 0.7), (0.0, 0.2, 0.45, 0.35), (0.1, 0.2, 0.3, 0.4))
C = voxels((0.1, 0.1, 0.7, 0.1), (0.1, 0.1, 0.1, 0.7), (0.0, 0.3, 0.1, 0.6), (0.5, 0.3, 0.1, 0.1))


@pytest.mark.parametrize("members,vote,labels", [
    # voxel 0: mean (0.1, 0.267, 0.533, 0.1) -> 2; votes 1, 2, 2 -> 2
    # voxel 1: mean (0.3, 0.1, 0.1, 0.5) -> 3; votes 0, 3, 3 -> 3
    # voxel 2: mean (0, 0.333, 0.283, 0.383) -> 3; votes 1, 2, 3, a three-way tie -> the highest mean of them, 3
    # voxel 3: mean (0.283, 0.25, 0.217, 0.25) -> 0; votes 0 (the argmax of an exact tie is the lowest class), 3, 0
    ((A, B, C), "mean", [2, 3, 3, 0]),
    ((A, B, C), "majority", [2, 3, 3, 0]),
    # two members, every vote a tie: voxel 0 votes 1, 2 -> the higher mean, 2 (0.45 against 0.35); voxel 1 votes
    # 0, 3 with the means tied exactly too (0.4, 0.4) -> the lower class, 0; voxel 2 votes 1, 2, means 0.35 and
    # 0.375 -> 2; voxel 3 votes 0, 3, means 0.175 and 0.325 -> 3
    ((A, B), "majority", [2, 0, 2, 3]),
    ((A, B), "mean", [2, 0, 2, 3]),
])
def test_fusion_of_known_probabilities(members, vote, labels):
    fused, mean = fuse(iter(members), vote)
    assert fused.dtype == np.uint8 and fused.tolist() == labels
    np.testing.assert_allclose(mean, np.mean(members, axis=0), atol=1e-7)


def test_majority_vote_outvotes_one_confident_member():
    # member 1 is sure of class 3 (0.97); members 2 and 3 mildly prefer class 1 (0.4): mean says 3, the vote says 1
    sure = voxels((0.01, 0.01, 0.01, 0.97))
    mild = voxels((0.3, 0.4, 0.0, 0.3))
    assert fuse([sure, mild, mild], "mean")[0].tolist() == [3]
    assert fuse([sure, mild, mild], "majority")[0].tolist() == [1]


def test_fusion_keeps_the_grid_and_refuses_mismatched_members():
    probs = np.zeros((4, 2, 3, 5), np.float32)
    probs[2] = 1
    labels, _ = fuse([probs, probs], "mean")
    assert labels.shape == (2, 3, 5) and set(np.unique(labels)) == {2}
    with pytest.raises(ValueError, match="shape"):
        fuse([probs, probs[:, :1]], "mean")
    with pytest.raises(ValueError, match="vote"):
        fuse([probs], "median")


@pytest.mark.parametrize("members,vote,message", [
    (("unet2d__dice_ce",), "mean", "an ensemble needs at least 2"),
    (("unet2d__dice_ce", "unet2d__dice_ce"), "mean", "more than once"),
    (("unet2d__dice_ce", "nnunet_2d"), "mean", "--members 'nnunet_2d' is not MODEL__LOSS"),
    (("unet2d__dice_ce", "unet3d_axial__dice_ce"), "mean", "'unet3d_axial__dice_ce' is not"),
    (("unet2d__dice_ce", "unet3d__dice_ce"), "median", "--vote 'median' is not one of mean, majority"),
])
def test_a_definition_refuses_what_cannot_be_ensembled(members, vote, message):
    with pytest.raises(InputError, match=message):
        Definition(members, vote)


def test_definition_round_trip_and_a_foreign_file_is_refused(tmp_path):
    definition = Definition(("unet2d__dice_ce", "unet2d_axial__dice_ce", "unet3d__dice_ce"), "majority")
    write_definition(tmp_path, definition)
    assert read_definition(tmp_path) == definition
    assert read_definition(tmp_path / "none") is None
    (tmp_path / "ensemble.json").write_text(json.dumps({"format": 2, "members": ["a"]}))
    with pytest.raises(InputError, match="is not an ensemble definition of format 1"):
        read_definition(tmp_path)


@pytest.mark.parametrize("name,problem", [
    ("baseline_ensemble", None), ("baseline_ensemble_views_3d", None), ("baseline_ensemble_vote", None),
    ("baseline_ensemble_", "is not baseline_ensemble"), ("my_ensemble", "is not baseline_ensemble"),
    ("baseline_ensemble/x", "is not a usable model name"),
])
def test_ensemble_names(name, problem):
    found = ensemble_problem(name)
    assert found == problem if problem is None else problem in found


@pytest.mark.parametrize("name,parsed,options", [
    ("unet2d__dice_ce", ("unet2d", "thickest", "dice_ce"), "--model unet2d --loss dice_ce"),
    ("unet2d_axial__dice_ce", ("unet2d", "axial", "dice_ce"), "--model unet2d --view axial --loss dice_ce"),
    ("denseunet2d_sagittal__focal_tversky", ("denseunet2d", "sagittal", "focal_tversky"),
     "--model denseunet2d --view sagittal --loss focal_tversky"),
    ("resunet2d_coronal__ce", ("resunet2d", "coronal", "ce"), "--model resunet2d --view coronal --loss ce"),
])
def test_view_names_round_trip(name, parsed, options):
    assert baseline_problem(name) is None
    assert parse_baseline_name(name) == parsed and baseline_name(parsed[0], parsed[2], parsed[1]) == name
    assert train_options_of(name) == options


@pytest.mark.parametrize("name", ["unet3d_axial__dice_ce", "unet2d_oblique__dice_ce", "unet2d_axial", "axial__ce"])
def test_names_that_are_no_view_of_a_2d_model_are_refused(name):
    assert "is not MODEL__LOSS" in baseline_problem(name)

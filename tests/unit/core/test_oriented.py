"""core/oriented.py: every volume turned to the training orientation, predicted there, its map carried back."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from ibsr_nnunet.core.orientation import axcodes
from ibsr_nnunet.core.oriented import Prediction, predict_oriented
from ibsr_nnunet.data.volumes import Volume


def volume(affine: np.ndarray, array: np.ndarray) -> Volume:
    return Volume(array, nib.Nifti1Image(array, affine).header)


def test_a_map_predicted_in_the_training_orientation_lands_on_each_inputs_grid():
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ras = volume(np.diag([1.0, 1.0, 1.0, 1.0]), array)
    lps = volume(np.diag([-1.0, -1.0, 1.0, 1.0]), array[::-1, ::-1].copy())  # the same voxels, axes flipped
    seen = {}

    def predict(volumes):
        for key, turned in volumes:
            seen[key] = (axcodes(turned.affine), turned.array.copy())
            yield Prediction(key, (turned.array % 4).astype(np.uint8))

    carried = list(predict_oriented([("ras", lambda: ras), ("lps", lambda: lps)], ("R", "A", "S"), predict, ahead=1))
    assert [c.key for c in carried] == ["ras", "lps"]
    assert seen["ras"][0] == seen["lps"][0] == ("R", "A", "S")
    np.testing.assert_array_equal(seen["ras"][1], seen["lps"][1])  # both orientations give the model one input
    for c, original in zip(carried, (ras, lps)):
        np.testing.assert_array_equal(c.prediction.labels, (original.array % 4).astype(np.uint8))
    assert carried[1].reorientation.input_axcodes == ("L", "P", "S")


def test_a_volume_that_fails_to_read_is_yielded_with_its_error_and_the_others_go_on():
    good = volume(np.eye(4), np.ones((2, 2, 2), np.float32))

    def broken():
        raise OSError("unreadable")

    def predict(volumes):
        for key, turned in volumes:
            yield Prediction(key, np.zeros(turned.array.shape, np.uint8))

    carried = {c.key: c for c in predict_oriented([("a", lambda: good), ("b", broken), ("c", lambda: good)],
                                                  ("R", "A", "S"), predict)}
    assert set(carried) == {"a", "b", "c"}
    assert isinstance(carried["b"].error, OSError) and carried["b"].prediction is None
    assert carried["a"].error is None and carried["c"].prediction.labels.shape == (2, 2, 2)


def test_trailing_axes_of_a_map_follow_the_first_three():
    lps = volume(np.diag([-1.0, -1.0, 1.0, 1.0]), np.arange(8, dtype=np.float32).reshape(2, 2, 2))

    def predict(volumes):
        for key, turned in volumes:
            labels = turned.array.astype(np.uint8)
            yield Prediction(key, np.stack([labels, labels + 1], axis=-1))

    [c] = predict_oriented([("x", lambda: lps)], ("R", "A", "S"), predict)
    np.testing.assert_array_equal(c.prediction.labels[..., 1], lps.array.astype(np.uint8) + 1)

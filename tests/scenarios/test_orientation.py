"""Orientation end to end: every permutation and flip of a scan gets the identical map carried back onto its own
grid, with a baseline (phantom and real IBSR scans) and through the ensemble's turn-predict-carry-back path; 2D
baselines slice across their training axis; an oblique scan is segmented in the nearest axis-aligned orientation."""

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import BASELINE, ORIENTATIONS, carried_back, invoke, reoriented_copy, segment_with_baseline
from ibsr_nnunet.core.workspace import Workspace


@pytest.mark.workspace
def test_every_orientation_of_a_scan_gets_the_identical_map(trained_baseline_ws, phantom_root, tmp_path):
    source = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(source, inputs / "original.nii.gz")
    copies = {f"turned{i}": reoriented_copy(source, inputs / f"turned{i}.nii.gz", perm, flips)
              for i, (perm, flips) in enumerate(ORIENTATIONS)}
    out = tmp_path / "out"
    result = segment_with_baseline(trained_baseline_ws, str(inputs), "--output", str(out), "--no-qc")
    assert result.exit_code == 0, result.output
    reference = nib.load(str(out / "original_tissue.nii.gz"))
    expected = np.asanyarray(reference.dataobj)
    table = pd.read_csv(out / "volumes.csv").set_index("scan")
    assert table.loc["original", "input_axcodes"] == "RAS"
    for name, copy in copies.items():
        written = nib.load(str(out / f"{name}_tissue.nii.gz"))
        assert written.shape == nib.load(str(copy)).shape[:3]
        np.testing.assert_array_equal(written.affine, nib.load(str(copy)).affine)
        # carried back through the inverse of the copy's own permutation and flips: voxel for voxel the original map
        np.testing.assert_array_equal(carried_back(np.asanyarray(written.dataobj), *ORIENTATIONS[int(name[-1])]),
                                      expected)
        assert table.loc[name, "CSF_ml"] == table.loc["original", "CSF_ml"]
        # warnings judge the scan as the model sees it: a permuted spacing is no reason for one
        assert str(table.loc[name, "warnings"]) == str(table.loc["original", "warnings"])
    assert table.loc["turned1", "input_axcodes"] == "SLA"


@pytest.mark.workspace
def test_baselines_slice_across_the_training_axis_whatever_the_input_spacing(trained_baseline_ws):
    from baselines.run_folder import TrainingOrientation, read_orientation
    from ibsr_nnunet.core.manifest import read_manifest

    recorded = read_orientation(trained_baseline_ws.baselines / BASELINE)
    spacing = read_manifest(trained_baseline_ws).training_spacing
    assert recorded == TrainingOrientation(("R", "A", "S"), 1, spacing)
    assert spacing[1] == max(spacing) and spacing[0] == spacing[2] < spacing[1]


def _isotropic_copy(phantom_root):
    """The phantom's IBSR_08 with 1 mm voxels: the thickest-axis rule would slice it across axis 0 (sagittal)."""
    from ibsr_nnunet.data.volumes import Volume

    source = nib.load(str(phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"))
    array = np.asanyarray(source.dataobj)[..., 0]
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_sform(np.eye(4), code=1)
    return Volume(array, header)


@pytest.mark.workspace
def test_a_1mm_isotropic_scan_is_still_sliced_across_the_training_axis(trained_baseline_ws, phantom_root, monkeypatch):
    """Predicted at its own spacing (--no-resample): the recorded axis 1 wins over the thickest-axis rule."""
    import baselines.infer as infer

    volume = _isotropic_copy(phantom_root)
    seen = []
    real = infer.predict_array
    monkeypatch.setattr(infer, "predict_array", lambda model, image, *a, **k: seen.append(image.shape) or real(
        model, image, *a, **k))
    predictor = infer.Predictor(trained_baseline_ws.baselines / BASELINE, device="cpu", resample=False)
    labels, _ = predictor(volume)
    x, y, z = volume.array.shape
    assert seen == [(y, x, z)] and labels.shape == volume.array.shape


@pytest.mark.workspace
def test_a_scan_far_from_the_training_spacing_is_predicted_at_it_and_its_map_carried_back(trained_baseline_ws,
                                                                                           phantom_root, monkeypatch):
    """The network sees the scan on the training spacing's grid, sliced across the training axis; the labels come
    back on the scan's own grid, from probabilities carried back before the argmax."""
    import baselines.infer as infer
    from baselines.spacing import resampled_shape
    from ibsr_nnunet.data.volumes import Volume

    volume = _isotropic_copy(phantom_root)
    seen = []
    real = infer.predict_probabilities
    monkeypatch.setattr(infer, "predict_probabilities", lambda model, image, *a, **k: seen.append(image) or real(
        model, image, *a, **k))
    predictor = infer.Predictor(trained_baseline_ws.baselines / BASELINE, device="cpu")
    training = predictor.orientation.spacing
    target = predictor.target_spacing(volume)
    assert target == (training[0], 1.0, training[2])  # a 2D model: in the slices' plane only
    labels, soft = predictor(volume, probabilities=True)
    x, y, z = resampled_shape(volume.array.shape, (1.0, 1.0, 1.0), target)
    assert [image.shape for image in seen] == [(y, x, z)]
    assert labels.shape == volume.array.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert soft.sums.sum() == pytest.approx(volume.array.size, rel=1e-4)  # probabilities sum to 1 per voxel
    # the same grid as training: the map at the scan's own spacing is a different one
    unresampled, _ = infer.Predictor(trained_baseline_ws.baselines / BASELINE, device="cpu", resample=False)(volume)
    assert (labels != unresampled).any()
    # a scan at the training spacing is left as it is
    from ibsr_nnunet.data.volumes import read_volume

    _, image, _ = trained_baseline_ws.cases("heldout")[0]
    assert predictor.target_spacing(read_volume(image)) is None
    # nor one that differs only across the slices, which a 2D model sees one by one
    header = volume.header.copy()
    header.set_zooms((training[0], training[1] / 3, training[2]))
    assert predictor.target_spacing(Volume(volume.array, header)) is None


@pytest.mark.workspace
def test_ibsr_cases_come_out_of_baseline_predict_unchanged_by_the_orientation_step(trained_baseline_ws):
    """The workspace's own cases are already in the training orientation: `baseline predict` (Predictor) gives
    exactly the map of the bare sliding window across the recorded axis."""
    from baselines.data import zscore
    from baselines.infer import Predictor, predict_array
    from ibsr_nnunet.data.volumes import read_volume

    _, image, _ = trained_baseline_ws.cases("heldout")[0]
    volume = read_volume(image)
    predictor = Predictor(trained_baseline_ws.baselines / BASELINE, device="cpu")
    labels, _ = predictor(volume)
    bare = predict_array(predictor.model, np.ascontiguousarray(np.moveaxis(zscore(np.asarray(volume.array)), 1, 0)),
                         predictor.window, amp=predictor.amp)
    np.testing.assert_array_equal(labels, np.moveaxis(bare, 0, 1))
    assert (labels > 0).any()


@pytest.mark.workspace
def test_an_oblique_scan_is_segmented_in_the_nearest_orientation_with_a_warning(trained_baseline_ws, phantom_root,
                                                                                 tmp_path):
    source = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    image = nib.load(str(source))
    turn = np.radians(20)  # about the S axis: nearest axis-aligned orientation is still R, A, S
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(source, inputs / "straight.nii.gz")
    oblique = inputs / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), rotation @ image.affine, header=image.header), str(oblique))
    out = tmp_path / "out"
    result = segment_with_baseline(trained_baseline_ws, str(inputs), "--output", str(out), "--no-qc")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "volumes.csv", dtype={"input_axcodes": str}).set_index("scan")
    assert "oblique by 20 degrees (more than 10)" in table.loc["oblique", "warnings"]
    assert "oblique" not in str(table.loc["straight", "warnings"]) and table.loc["oblique", "input_axcodes"] == "RAS"
    written = nib.load(str(out / "oblique_tissue.nii.gz"))
    np.testing.assert_array_equal(written.affine, nib.load(str(oblique)).affine)  # not resampled: the input's grid
    np.testing.assert_array_equal(np.asanyarray(written.dataobj),
                                  np.asanyarray(nib.load(str(out / "straight_tissue.nii.gz")).dataobj))


@pytest.mark.workspace
def test_ensemble_turns_only_images_in_another_orientation_and_carries_maps_back(phantom_root, tmp_path):
    """The ensemble's way through core/oriented.py on real files: IBSR's own orientation is predicted as it is, a
    permuted and flipped copy is turned to the training axes voxel for voxel, and its map carried back."""
    from ibsr_nnunet.core.oriented import Prediction, predict_oriented
    from ibsr_nnunet.data.volumes import read_volume

    image = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    same = tmp_path / "IBSR_08_0000.nii.gz"
    shutil.copy(image, same)
    turned = reoriented_copy(image, tmp_path / "IBSR_09_0000.nii.gz", *ORIENTATIONS[1])
    seen = {}

    def predict(volumes):
        for key, volume in volumes:
            seen[key] = volume
            yield Prediction(key, volume.array.astype(np.uint8) % 4)  # a "prediction": the turned voxels

    carried = {c.key: c for c in predict_oriented([("same", lambda: read_volume(same)),
                                                    ("turned", lambda: read_volume(turned))], ("R", "A", "S"), predict)}
    original = np.asanyarray(nib.load(str(image)).dataobj)[..., 0]
    assert carried["same"].reorientation.identity and not carried["turned"].reorientation.identity
    for key in ("same", "turned"):  # both are seen by the model exactly as the original scan
        np.testing.assert_array_equal(seen[key].array, original)
        np.testing.assert_allclose(seen[key].affine, nib.load(str(image)).affine)
    np.testing.assert_array_equal(carried["turned"].prediction.labels,
                                  np.asanyarray(nib.load(str(turned)).dataobj).astype(np.uint8) % 4)


@pytest.fixture(scope="module")
def trained_real(shared_ibsr18, tmp_path_factory) -> Workspace:
    """The shared real IBSR18 converted, with a unet2d__dice_ce trained for seconds (orientation, not accuracy)."""
    ws = Workspace.open(tmp_path_factory.mktemp("segment-real") / "ws")
    for args in (["convert", str(shared_ibsr18)],
                 ["baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", "1",
                  "--iterations-per-epoch", "4", "--width", "4", "--patch-size", "64", "--batch-size", "2",
                  "--device", "cpu"]):
        result = invoke(ws, *args)
        assert result.exit_code == 0, result.output
    return ws


@pytest.mark.integration
def test_real_scans_in_several_orientations_and_an_analyze_copy(trained_real, shared_ibsr18, tmp_path):
    """Real shared scans, permuted and flipped with the affine kept: the map carried back is identical on CPU; an
    Analyze copy (no orientation stored: nibabel's convention, x mirrored) is segmented on its own grid."""
    source = shared_ibsr18 / "Test_Set" / "IBSR_02" / "IBSR_02.nii.gz"
    inputs = tmp_path / "scans"
    inputs.mkdir()
    shutil.copy(source, inputs / "original.nii.gz")
    for i, (perm, flips) in enumerate(ORIENTATIONS[1:], start=1):
        reoriented_copy(source, inputs / f"turned{i}.nii.gz", perm, flips)
    volume = nib.load(str(source))
    analyze = inputs / "analyze.hdr"
    nib.save(nib.AnalyzeImage(np.asanyarray(volume.dataobj)[..., 0], None, nib.AnalyzeHeader()), str(analyze))
    out = tmp_path / "out"
    result = segment_with_baseline(trained_real, str(inputs), "--output", str(out), "--no-qc")
    assert result.exit_code == 0, result.output
    expected = np.asanyarray(nib.load(str(out / "original_tissue.nii.gz")).dataobj)
    for i, (perm, flips) in enumerate(ORIENTATIONS[1:], start=1):
        back = np.asanyarray(nib.load(str(out / f"turned{i}_tissue.nii.gz")).dataobj)
        np.testing.assert_array_equal(carried_back(back, perm, flips), expected)
    table = pd.read_csv(out / "volumes.csv", dtype={"input_axcodes": str}).set_index("scan")
    assert table.loc["analyze", "input_axcodes"] == "LAS"
    mirrored = np.asanyarray(nib.load(str(out / "analyze_tissue.nii.gz")).dataobj)
    assert mirrored.shape == expected.shape and (mirrored > 0).sum() > 0.8 * (expected > 0).sum()

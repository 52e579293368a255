"""Sliding-window inference with Gaussian weighting, and NIfTI label maps on each input's exact grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ibsr_nnunet.core import devices
from ibsr_nnunet.core.atomic import atomic_path
from ibsr_nnunet.core.choices import fraction
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.orientation import axcodes as axcodes_of
from ibsr_nnunet.core.oriented import Prediction, confidence, predict_oriented
from ibsr_nnunet.data.volumes import Volume, read_volume, write_volume

from .data import axis_along, sliced_position, view_axis, zscore
from .models import UNet, build_model
from .options import options_from
from .precision import autocast
from .registry import THICKEST, train_options_of
from .run_folder import best_weights_path, read_best_weights, read_orientation
from .spacing import argmax_on, far_from, onto_shape, to_spacing
from .threads import ThreadTuner


def gaussian_weights(window: tuple[int, ...], sigma_scale: float = 0.125) -> torch.Tensor:
    """Importance map peaking at the window's centre (σ = window/8, as nnU-Net), floored so no weight is 0."""
    axes = []
    for n in window:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        axes.append(torch.exp(-0.5 * (x / (n * sigma_scale)) ** 2))
    weights = axes[0]
    for axis in axes[1:]:
        weights = weights.unsqueeze(-1) * axis
    weights = weights / weights.max()
    return weights.clamp_min(1e-3)


def window_starts(extent: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering 0..extent with windows of `window` overlapping by at least `overlap`."""
    if extent <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = int(np.ceil((extent - window) / step)) + 1
    return [int(round(i * (extent - window) / (count - 1))) for i in range(count)]


@dataclass(frozen=True)
class Soft:
    """What a prediction's probabilities say beyond its labels: each class's summed probability over all voxels (the
    soft voxel count), and the confidence: the mean, over the voxels labelled tissue, of the most likely class's
    probability (NaN when none is)."""

    sums: np.ndarray
    confidence: float


@torch.no_grad()
def predict_array(model: UNet, image: np.ndarray, window: tuple[int, ...], *, overlap: float = 0.5,
                  batch_size: int = 8, device: torch.device = torch.device("cpu"), amp: bool = True,
                  tuner: ThreadTuner | None = None, tta: bool | tuple[int, ...] = False,
                  probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, Soft]:
    """uint8 labels for a z-scored (S, H, W) image; with `probabilities`, also their Soft summary (outside the
    brain's box all probability is background's).

    2D models (len(window) == 2) run slice by slice along axis 0, with windows inside each slice; 3D models use 3D
    windows. overlap: fraction shared by neighbouring windows; each window's softmax is weighted by a Gaussian.
    batch_size: windows (2D: slices) per forward pass. Only the bounding box of the nonzero (brain) voxels is
    segmented, the rest is background; a window larger than that box shrinks to it. tuner: runs each forward pass
    (picks CPU threads), or None. tta: average the softmax over every mirroring of the window's spatial axes
    (True: all of them, 4 passes in 2D, 8 in 3D, as nnU-Net's test-time mirroring does; a tuple: those axes of the
    window only, e.g. (1,) for the left-right axis of a model trained with left-right flips: 2 passes).
    """
    labels = np.zeros(image.shape, np.uint8)
    sums = np.zeros(model.head.out_channels)
    sums[0] = image.size
    sure = float("nan")
    found = _brain_probabilities(model, image, window, overlap, batch_size, device, amp, tuner, tta)
    if found is not None:
        box, probs = found
        labels[box] = probs.argmax(0).numpy().astype(np.uint8)
        if probabilities:
            sums += probs.sum(dim=tuple(range(1, probs.ndim))).double().numpy()
            sums[0] -= probs[0].numel()  # the box's voxels were counted as background above
            sure = confidence(probs.numpy(), labels[box])
    return (labels, Soft(sums, sure)) if probabilities else labels


@torch.no_grad()
def predict_probabilities(model: UNet, image: np.ndarray, window: tuple[int, ...], *, overlap: float = 0.5,
                          batch_size: int = 8, device: torch.device = torch.device("cpu"), amp: bool = True,
                          tuner: ThreadTuner | None = None, tta: bool | tuple[int, ...] = False) -> np.ndarray:
    """float32 class probabilities (C, S, H, W) of a z-scored (S, H, W) image, as predict_array computes them;
    outside the brain's box all probability is background's."""
    probs = np.zeros((model.head.out_channels, *image.shape), np.float32)
    probs[0] = 1
    found = _brain_probabilities(model, image, window, overlap, batch_size, device, amp, tuner, tta)
    if found is not None:
        box, inside = found
        probs[(slice(None), *box)] = inside.numpy()
    return probs


def _brain_probabilities(model: UNet, image: np.ndarray, window: tuple[int, ...], overlap: float, batch_size: int,
                         device: torch.device, amp: bool, tuner: ThreadTuner | None,
                         tta: bool | tuple[int, ...]) -> tuple[tuple[slice, ...], torch.Tensor] | None:
    """(the brain's bounding box, its class probabilities), or None when the image has no brain voxel."""
    if len(window) != model.dims:
        raise ValueError(f"a {model.dims}D model needs a {model.dims}-number window, got {window}")
    fraction("--overlap", overlap, with_zero=True)
    model.eval()
    brain = np.nonzero(image)
    if not len(brain[0]):  # z-scored images are 0 outside the brain: nothing to segment there
        return None
    # only the brain's bounding box is segmented (2.4x fewer voxels on IBSR); outside it is background
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in brain)
    forward = tuner or (lambda work: work())
    return box, _predict_box(model, image[box], window, overlap, batch_size,
                             lambda batch: forward(lambda: _forward(model, batch, device, amp, tta)))


def _predict_box(model: UNet, image: np.ndarray, window: tuple[int, ...], overlap: float, batch_size: int,
                 forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The box's class probabilities (C, *shape): Gaussian-weighted window softmaxes, normalised per voxel."""
    spatial = image.shape[-model.dims:]
    # a window larger than the image shrinks to it: the networks take any size, so one window then covers it all
    window = tuple(min(w, n) for w, n in zip(window, spatial))
    volume = torch.from_numpy(np.ascontiguousarray(image))
    weights = gaussian_weights(window)
    starts = [window_starts(n, w, overlap) for n, w in zip(spatial, window)]
    grid = [(a, b) for a in starts[0] for b in starts[1]] if model.dims == 2 else \
        [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    probs = torch.zeros((model.head.out_channels,) + tuple(volume.shape))
    total = torch.zeros(tuple(volume.shape))
    if model.dims == 2:
        for corner in grid:
            region = tuple(slice(s, s + w) for s, w in zip(corner, window))
            for first in range(0, volume.shape[0], batch_size):
                chunk = volume[(slice(first, first + batch_size), *region)].unsqueeze(1)
                out = forward(chunk)  # (n, C, h, w) probabilities
                probs[(slice(None), slice(first, first + batch_size), *region)] += out.transpose(0, 1) * weights
                total[(slice(first, first + batch_size), *region)] += weights
    else:
        for first in range(0, len(grid), batch_size):
            regions = [tuple(slice(s, s + w) for s, w in zip(c, window)) for c in grid[first:first + batch_size]]
            out = forward(torch.stack([volume[r] for r in regions]).unsqueeze(1))
            for region, p in zip(regions, out):
                probs[(slice(None), *region)] += p * weights
                total[region] += weights
    return probs / total


def _forward(model: UNet, batch: torch.Tensor, device: torch.device, amp: bool,
             tta: bool | tuple[int, ...] = False) -> torch.Tensor:
    batch = batch.to(device)
    if model.dims == 2:
        batch = batch.contiguous(memory_format=torch.channels_last)
    spatial = list(range(2, batch.ndim)) if tta is True else [axis + 2 for axis in tta or ()]
    mirrorings = [tuple(a for bit, a in enumerate(spatial) if mask >> bit & 1) for mask in range(2 ** len(spatial))]
    total = None
    for axes in mirrorings:
        with autocast(device, amp):
            logits = model(torch.flip(batch, axes) if axes else batch)
        probs = torch.softmax(logits.float(), 1)
        probs = torch.flip(probs, axes) if axes else probs
        total = probs if total is None else total + probs
    return (total / len(mirrorings)).cpu()


def load_model(run: Path, device: torch.device) -> tuple[UNet, dict]:
    """The best weights of the run in `run` and its saved options."""
    best = best_weights_path(run)
    if not best.is_file():
        raise InputError(f"no trained model at {best}; run `ibsr-nnunet baseline train` with this model and loss "
                         f"first.")
    fix = f"delete {run} and train it again with `ibsr-nnunet baseline train {train_options_of(run.name)}`"
    saved = read_best_weights(run, fix)
    options = options_from(saved.options)
    model = build_model(options.model, options.width, options.depth, dropout=options.dropout)
    try:
        model.load_state_dict(saved.model)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise InputError(f"{best} holds weights that do not fit a {options.model} of width {options.width} and "
                         f"depth {options.depth} ({type(err).__name__}); {fix}.") from err
    model = model.to(device)
    if model.dims == 2:
        model = model.to(memory_format=torch.channels_last)
    return model, saved.options


class Predictor:
    """A trained baseline, loaded once, that segments volumes already in its training orientation
    (core/oriented.py brings them there and back); 2D models slice across the axis they were trained on (their
    view). With `resample`, a volume far from the training spacing (spacing.py) is resampled to it (2D models: in
    the slices' plane) and its probabilities carried back onto its grid before the argmax. With `tta`, the mirrorings
    are those the run was trained to be indifferent to: the left-right axis for a run trained with left-right flips
    only, every axis otherwise."""

    def __init__(self, run: Path, *, device: str = "auto", overlap: float = 0.5, batch_size: int = 8,
                 threads: int = 0, tta: bool = False, resample: bool = True):
        self.device = devices.torch_device(device)
        self.tuner = ThreadTuner((threads or torch.get_num_threads(),) if threads or self.device.type != "cpu"
                                 else None, every=20)
        self.model, saved = load_model(Path(run), self.device)
        self.window = (saved.get("infer_window") or saved["patch_size"],) * self.model.dims
        self.amp = saved.get("amp", True)
        self.overlap, self.batch_size, self.tta = overlap, batch_size, tta
        self.left_right_only = bool(saved.get("flip")) and not saved.get("augment")
        self.view = saved.get("view", THICKEST)
        self.orientation = read_orientation(run)
        self.resample = resample

    def target_spacing(self, volume: Volume) -> tuple[float, ...] | None:
        """The spacing `volume` (in the training orientation) is predicted at: the training spacing when some axis is
        far from it, else None (its own). A 2D model sees each slice alone, so its slicing axis keeps the volume's
        own spacing (as nnU-Net's 2d resamples in plane only)."""
        if not self.resample or self.orientation is None or self.orientation.spacing is None:
            return None
        target = list(self.orientation.spacing)
        if self.model.dims == 2:
            axis = self._axis(volume)
            target[axis] = volume.spacing[axis]
        return tuple(target) if far_from(volume.spacing, target) else None

    def _axis(self, volume: Volume) -> int:
        axis = self.orientation.slicing_axis if self.orientation else None
        if axis is not None:
            return int(axis)
        return view_axis(self.view, axcodes_of(volume.affine), volume.spacing)

    def _mirroring(self, volume: Volume, axis: int) -> bool | tuple[int, ...]:
        """predict_array's `tta` for `volume`: the window axis that runs left-right, all axes, or none."""
        if not self.tta or not self.left_right_only:
            return self.tta
        left_right = axis_along(axcodes_of(volume.affine), "LR")
        if left_right is None:
            return ()
        window_axis = sliced_position(left_right, axis) - (self.model.dims == 2)  # a 2D window lies in one slice
        return (window_axis,) if window_axis >= 0 else ()

    def _settings(self, volume: Volume, axis: int) -> dict:
        return dict(overlap=self.overlap, batch_size=self.batch_size, device=self.device, amp=self.amp,
                    tuner=self.tuner, tta=self._mirroring(volume, axis))

    def __call__(self, volume: Volume, probabilities: bool = False) -> tuple[np.ndarray, Soft | None]:
        """(uint8 labels on `volume`'s grid, their Soft summary or None) for a volume in the training
        orientation."""
        axis = self._axis(volume)
        image = np.asarray(volume.array)
        if target := self.target_spacing(volume):
            # moved after resampling, so both grids keep the volume's axis order
            resampled = to_spacing(image, volume.spacing, target)
            probs = predict_probabilities(self.model, _sliced(zscore(resampled), axis), self.window,
                                          **self._settings(volume, axis))
            labels, sums, sure = argmax_on(np.moveaxis(probs, 1, axis + 1), image.shape)
            return labels, Soft(sums, sure) if probabilities else None
        found = predict_array(self.model, _sliced(zscore(image), axis), self.window, probabilities=probabilities,
                              **self._settings(volume, axis))
        labels, soft = found if probabilities else (found, None)
        return np.ascontiguousarray(np.moveaxis(labels, 0, axis)), soft

    def probabilities(self, volume: Volume) -> np.ndarray:
        """float32 class probabilities (C, *grid) on `volume`'s grid, for a volume in the training orientation (what
        __call__ takes the argmax of; resampled ones carried back onto the grid linearly)."""
        axis = self._axis(volume)
        image = np.asarray(volume.array)
        target = self.target_spacing(volume)
        source = to_spacing(image, volume.spacing, target) if target else image
        probs = predict_probabilities(self.model, _sliced(zscore(source), axis), self.window,
                                      **self._settings(volume, axis))
        probs = np.moveaxis(probs, 1, axis + 1)
        if target:
            probs = np.stack([onto_shape(channel, image.shape) for channel in probs])
        return np.ascontiguousarray(probs, dtype=np.float32)


def _sliced(image: np.ndarray, axis: int) -> np.ndarray:
    """The image with the slicing axis first, as the networks take it."""
    return np.ascontiguousarray(np.moveaxis(image, axis, 0))


def predict_files(run: Path, images: list[tuple[str, Path]], out_dir: Path, *, device: str = "auto",
                  overlap: float = 0.5, batch_size: int = 8, threads: int = 0, reuse: bool = True, tta: bool = False,
                  on_case: Callable[[str, bool], None] | None = None) -> list[Path]:
    """Predict each (case id, image file) into out_dir/<case>.nii.gz with the run's best weights, atomically, on the
    image's own grid (turned to the run's training orientation and back, core/oriented.py; a run that recorded
    none predicts each image as it lies).

    A prediction newer than the weights is kept unless `reuse` is False (re-runs redo only what is missing or
    older than the weights). on_case(case, skipped) is called after each case.
    """
    predictor = Predictor(Path(run), device=device, overlap=overlap, batch_size=batch_size, threads=threads, tta=tta)
    weights_time = best_weights_path(run).stat().st_mtime

    def predict(volumes: Iterator[tuple[str, Volume]]) -> Iterator[Prediction]:
        for case_id, volume in volumes:
            yield Prediction(case_id, predictor(volume)[0])

    written = []
    for case_id, image_path in images:
        target = Path(out_dir) / f"{case_id}.nii.gz"
        skip = reuse and target.is_file() and target.stat().st_mtime >= weights_time
        if not skip:
            volume = read_volume(image_path)
            axcodes = predictor.orientation.axcodes if predictor.orientation else axcodes_of(volume.affine)
            [carried] = predict_oriented([(case_id, lambda: volume)], axcodes, predict)
            if carried.error is not None:
                raise carried.error
            with atomic_path(target) as tmp:
                write_volume(volume.with_array(carried.prediction.labels), tmp)
        written.append(target)
        if on_case:
            on_case(case_id, skip)
    return written

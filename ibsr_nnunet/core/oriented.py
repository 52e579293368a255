"""Prediction in the training orientation, the one way every command predicts: each volume read, turned to the
training axis codes (permuted and flipped, never resampled), prepared and predicted there, and its map carried back
onto the input's grid voxel for voxel."""

from __future__ import annotations

import itertools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Generic, Iterable, Iterator, Optional, Protocol, TypeVar

import numpy as np

from .orientation import Reorientation, towards


class Turnable(Protocol):
    """A volume that can be turned (data.volumes.Volume)."""

    @property
    def affine(self) -> np.ndarray: ...

    def reoriented(self, reorientation: Reorientation) -> "Turnable": ...


V = TypeVar("V", bound=Turnable)


@dataclass(frozen=True)
class Prediction:
    """One volume's prediction: uint8 labels (trailing axes allowed: one map each), each class's summed probability
    and the confidence (the mean highest class probability over the tissue voxels) when probabilities were asked
    for; or the error and the step it failed in."""

    key: str
    labels: Optional[np.ndarray] = None
    sums: Optional[np.ndarray] = None
    seconds: float = 0.0
    error: Optional[Exception] = None
    step: str = "the prediction"
    confidence: Optional[float] = None


def confidence(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean over the tissue voxels (labels > 0) of the highest class probability (probabilities: C × the labels'
    shape); NaN when no voxel is tissue."""
    tissue = np.asarray(labels) > 0
    if not tissue.any():
        return float("nan")
    return float(np.asarray(probabilities).max(axis=0)[tissue].mean())


@dataclass(frozen=True)
class Carried(Generic[V]):
    """One input's way through: the volume as read (its grid is the output's), how it was turned, and its
    prediction with the labels back on the input's grid; or the error reading or preparing it."""

    key: str
    original: Optional[V]
    reorientation: Optional[Reorientation]
    prediction: Optional[Prediction]
    seconds: float = 0.0  # reading, turning and preparing
    error: Optional[Exception] = None  # reading or preparing failed (then nothing was predicted)


def predict_oriented(inputs: Iterable[tuple[str, Callable[[], V]]], axcodes: tuple[str, ...],
                     predict: Callable[[Iterator[tuple[str, V]]], Iterable[Prediction]], *,
                     prepare: Callable[[str, V], V] = lambda key, volume: volume,
                     ahead: int = 0) -> Iterator[Carried[V]]:
    """Each (key, load) read, turned to `axcodes` and prepared there; `predict` over the turned volumes (a stream:
    it may take the next volume before it yields a prediction); each prediction's labels carried back onto its
    input's grid. With `ahead`, reading and preparing run on one thread that many volumes ahead of `predict`.
    A volume that fails to read or prepare is yielded with its error as soon as `predict` asks past it."""
    staged: dict[str, Carried[V]] = {}
    failed: deque[Carried[V]] = deque()

    def stage(key: str, load: Callable[[], V]) -> tuple[Carried[V], Optional[V]]:
        started = time.perf_counter()
        original = reorientation = None
        try:
            original = load()
            reorientation = towards(original.affine, axcodes)
            turned = prepare(key, original.reoriented(reorientation))
        except Exception as err:
            return Carried(key, original, reorientation, None, time.perf_counter() - started, err), None
        return Carried(key, original, reorientation, None, time.perf_counter() - started), turned

    def turned() -> Iterator[tuple[str, V]]:
        for carried, volume in _in_order(inputs, stage, ahead):
            if carried.error is not None:
                failed.append(carried)
                continue
            staged[carried.key] = carried
            yield carried.key, volume

    for prediction in predict(turned()):
        while failed:
            yield failed.popleft()
        carried = staged.pop(prediction.key)
        labels = prediction.labels
        if labels is not None:
            prediction = replace(prediction, labels=carried.reorientation.undo(labels))
        yield replace(carried, prediction=prediction)
    yield from failed
    failed.clear()


def _in_order(inputs: Iterable[tuple[str, Callable[[], V]]], stage: Callable, ahead: int) -> Iterator:
    """stage(key, load) for each input, in order; with `ahead`, on one thread that many inputs ahead (no process
    outlives the command)."""
    if ahead <= 0:
        yield from (stage(key, load) for key, load in inputs)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage") as pool:
        queue = iter(inputs)
        pending = deque(pool.submit(stage, *item) for item in itertools.islice(queue, ahead))
        while pending:
            done = pending.popleft().result()
            following = next(queue, None)
            if following is not None:
                pending.append(pool.submit(stage, *following))
            yield done

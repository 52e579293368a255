"""Picks torch's CPU thread count while running, because shared cores can make more threads far slower."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


class ThreadTuner:
    """Times one call with each candidate thread count every `every` calls and keeps the fastest until the next trial.

    On two cores that other jobs also use, one thread measured 14× faster than two (OpenMP threads spin waiting for
    a preempted sibling); on idle cores two were 1.7× faster than one. candidates: thread counts to try (default:
    1 and torch's current count). every: calls between trials (each trial costs one call per candidate).
    """

    def __init__(self, candidates: tuple[int, ...] | None = None, every: int = 100):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.candidates = tuple(sorted(set(candidates or (1, torch.get_num_threads()))))
        if min(self.candidates) < 1:
            raise ValueError(f"thread counts must be >= 1, got {self.candidates}")
        self.every, self.calls, self.best = every, 0, self.candidates[-1]
        self._timings: dict[int, float] = {}

    def __call__(self, work: Callable[[], T]) -> T:
        """Run `work()` under the thread count this call gets, timing it when it is a trial."""
        phase = self.calls % self.every
        trial = phase < len(self.candidates) and len(self.candidates) > 1
        threads = self.candidates[phase] if trial else self.best
        torch.set_num_threads(threads)
        started = time.perf_counter()
        result = work()
        if trial:
            self._timings[threads] = time.perf_counter() - started
            if len(self._timings) == len(self.candidates):
                self.best = min(self._timings, key=self._timings.get)
                self._timings = {}
        self.calls += 1
        return result

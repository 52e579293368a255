"""Process-wide settings made once, at process entry, before the libraries that read them are imported."""

from __future__ import annotations

import os


def prepare_process() -> None:
    """OpenMP's wait policy and matplotlib's backend; a user's own values win.

    torch's OpenMP threads spin while they wait; where cores are shared (other jobs, nnU-Net's own data workers) the
    spinning starves everyone. One small nnU-Net prediction on 2 cores: 67 s spinning vs 7 s passive under heavy
    load, 9.7 vs 6.9 s beside one busy process, 5.3 vs 7.3 s on idle cores. Jobs rarely own idle cores, so passive.
    Figures are files only: no display on cluster nodes and CI.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MPLBACKEND", "Agg")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, which SLURM sets to the job's CPUs)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

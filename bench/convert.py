"""Benchmark: `convert` on the 13 shared IBSR18 volumes against a naive single-process nibabel loop, side by side.

Prints both wall times and their ratio (target <= 0.75 on 2 cores). The naive loop only loads, squeezes and
saves each file (no validation, no label mapping, no integrity check); `convert` does all of that, in parallel.
nnU-Net's integrity check costs a fixed ~2-3 s (importing torch), more than the whole naive loop, so the ratio
is printed with and without the time spent waiting for it. It also measures the dataset lock `convert` holds
(take it, heartbeat thread, release) in the same run, as a share of `convert`'s time (target < 1 %), and the
checksums: hashing every written file for the manifest (done in the workers) and the up-to-date check against it.
Run: python bench/convert.py [--rounds 3] [--source ../shared/data/ibsr18]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from ibsr_nnunet.core import checksums
from ibsr_nnunet.core.environment import available_cores
from ibsr_nnunet.core.locks import Lock
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.convert import ConvertOptions, convert

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibsr18"


def naive_loop(source: Path, out: Path) -> None:
    """What people write first: one process, nibabel load + squeeze + save, every file."""
    out.mkdir(parents=True)
    for path in sorted(source.rglob("*.nii.gz")):
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)[..., 0]
        nib.save(nib.Nifti1Image(data, image.affine), str(out / path.name))


def lock_seconds(folder: Path, repeats: int = 200) -> float:
    """Seconds to take and release one lock (record written and fsynced, linked into place, heartbeat thread
    started and joined, unlinked)."""
    start = time.perf_counter()
    for _ in range(repeats):
        with Lock(folder / ".dataset.lock", "dataset", "bench"):
            pass
    return (time.perf_counter() - start) / repeats


def checksum_seconds(ws: Workspace) -> tuple[float, float]:
    """(seconds to hash every written file in one process, seconds of the up-to-date check on the intact dataset)."""
    files = checksums.dataset_files(ws.raw_dataset)
    start = time.perf_counter()
    for name in files:
        checksums.file_record(ws.raw_dataset / name)
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    assert not checksums.changes(ws)
    return hashed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(args.source.rglob("*.nii.gz"))
    print(f"{len(files)} files ({sum(f.stat().st_size for f in files) / 2**20:.1f} MiB) from {args.source}; "
          f"{available_cores()} cores")
    ours, naive, check, locks, hashing, verifying = [], [], [], [], [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            start = time.perf_counter()
            ws = Workspace.open(tmp / "ws")
            result = convert(args.source, ws, ConvertOptions())
            ours.append(time.perf_counter() - start)
            check.append(result.seconds["integrity_check"])
            for found, seconds in zip((hashing, verifying), checksum_seconds(ws)):
                found.append(seconds)
            start = time.perf_counter()
            naive_loop(args.source, tmp / "naive")
            naive.append(time.perf_counter() - start)
            locks.append(lock_seconds(tmp))
        print(f"round {round_ + 1}: convert {ours[-1]:.2f} s (of which waiting for nnU-Net's integrity check "
              f"{check[-1]:.2f} s), naive loop {naive[-1]:.2f} s")
    ours_median, naive_median = statistics.median(ours), statistics.median(naive)
    work_median = statistics.median(o - c for o, c in zip(ours, check))
    print(f"median: naive loop {naive_median:.2f} s")
    print(f"  convert, whole command:             {ours_median:.2f} s  ratio {ours_median / naive_median:.2f}")
    print(f"  convert, without the integrity check: {work_median:.2f} s  ratio {work_median / naive_median:.2f} "
          f"(target <= 0.75)")
    lock_median = statistics.median(locks)
    print(f"  the dataset lock: {lock_median * 1000:.2f} ms = {100 * lock_median / ours_median:.3f} % of convert "
          f"(target < 1 %)")
    hashing_median = statistics.median(hashing)
    print(f"  hashing the written files (one process; convert spreads it over its workers): "
          f"{hashing_median * 1000:.1f} ms = {100 * hashing_median / work_median:.2f} % of convert without the "
          f"integrity check; the up-to-date check: {statistics.median(verifying) * 1000:.2f} ms")


if __name__ == "__main__":
    main()

"""Epochs lost per interruption and checkpoint cost of `ibsr-nnunet train`, on a phantom (real nnunetv2, CPU).

Trains 2d fold 0 of an 8-subject phantom and sends SIGUSR1 at chosen points inside chosen epochs; each time the
run exits 75 and the next `train` resumes. Epochs lost = progress at the signal (epoch + fraction of it done)
minus the epoch the rerun starts at. nnU-Net's default, measured at the same points, is the progress since its
last checkpoint (it writes one every `save_every` = 50 epochs and has no signal handling, so a kill drops
everything since then). Checkpoint cost = seconds spent writing checkpoints (fsync included, from the
"written in" log lines) over the wall time of the epochs.

    python bench/resume.py [--epochs 7] [--iterations 25]

Measured 2026-11-28 on this 2-core CPU machine (no GPU in this session): see bench/README.md.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

RESUMED = re.compile(r"from checkpoint_\w+\.pth at epoch (\d+)")
NNUNET_SAVE_EVERY = 50  # nnUNetTrainer.__init__: self.save_every = 50


def log_lines(fold: Path) -> list[tuple[datetime, str]]:
    """Every stamped line of every run's training log of the fold, oldest first."""
    from ibsr_nnunet.nnunet.fold import logs, stamped_lines

    return sorted(line for log in logs(fold) for line in stamped_lines(log))


def epoch_starts(fold: Path) -> list[tuple[datetime, int]]:
    return [(t, int(text.split()[1])) for t, text in log_lines(fold) if re.fullmatch(r"Epoch \d+", text)]


def cli(workspace: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ibsr_nnunet", "--workspace", str(workspace), *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=25)
    args = parser.parse_args()
    # (epoch, fraction of that epoch done) at which to interrupt
    points = [(1, 0.3), (3, 0.6), (5, 0.9)]

    from ibsr_nnunet.core.workspace import Workspace
    from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        subprocess.run(cli(ws, "phantom", str(Path(tmp) / "src"), "--subjects", "8"), check=True, capture_output=True)
        subprocess.run(cli(ws, "convert", str(Path(tmp) / "src")), check=True, capture_output=True)
        subprocess.run(cli(ws, "plan", "--configs", "2d"), check=True, capture_output=True)
        name = trainer_name(args.epochs, args.iterations)
        fold = fold_folder(Workspace.open(ws), "2d", 0, trainer=name)
        train = cli(ws, "train", "--fold", "0", "--config", "2d", "--epochs", str(args.epochs),
                    "--iterations-per-epoch", str(args.iterations), "--device", "cpu")

        def start() -> tuple[subprocess.Popen, list[str]]:
            process = subprocess.Popen(train, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines: list[str] = []
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return process, lines

        rows = []
        process, lines = start()
        for target, fraction in points:
            while True:  # wait until `fraction` of epoch `target` has passed, judged by the previous epochs' wall time
                starts = epoch_starts(fold)
                walls = [b[0] - a[0] for a, b in zip(starts, starts[1:]) if b[1] == a[1] + 1]
                current = [t for t, e in starts if e == target]
                if current and walls:
                    wall = sorted(walls)[len(walls) // 2].total_seconds()
                    if (datetime.now() - current[-1]).total_seconds() >= fraction * wall:
                        break
                if process.poll() is not None:
                    sys.exit(f"train ended before epoch {target}: {''.join(lines)}")
                time.sleep(0.02)
            progress = target + min(0.99, (datetime.now() - current[-1]).total_seconds() / wall)
            process.send_signal(signal.SIGUSR1)
            if process.wait(timeout=300) != 75:
                sys.exit(f"expected exit 75, got {process.returncode}: {''.join(lines)}")
            process, lines = start()
            while not (resumed := [m for line in lines if (m := RESUMED.search(line))]):
                if process.poll() is not None:
                    sys.exit(f"train did not resume: {''.join(lines)}")
                time.sleep(0.02)
            start_epoch = int(resumed[0][1])
            # the epoch ended before the signal was acted on (it ran faster than the median): nothing was lost
            progress = max(progress, float(start_epoch))
            nnunet_default = progress - NNUNET_SAVE_EVERY * int(progress // NNUNET_SAVE_EVERY)
            rows.append((target, fraction, progress, start_epoch, progress - start_epoch, nnunet_default))
        if process.wait(timeout=600) != 0:
            sys.exit(f"the last run failed: {''.join(lines)}")

        lines = log_lines(fold)
        writes = [float(re.search(r"written in ([\d.]+) s", text)[1]) for _, text in lines if "written in" in text]
        starts = epoch_starts(fold)
        walls = [(b[0] - a[0]).total_seconds() for a, b in zip(starts, starts[1:]) if b[1] == a[1] + 1]
        checkpoint_mb = (fold / "checkpoint_final.pth").stat().st_size / 1e6

    print(f"{name}, 2d fold 0 of an 8-subject phantom, CPU")
    print(f"{'signal in epoch':>16} {'progress':>9} {'resumed at':>11} {'lost (ours)':>12} "
          f"{'lost (nnU-Net default)':>23}")
    for target, fraction, progress, start, ours, default in rows:
        print(f"{target:>10} @ {fraction:.0%} {progress:>9.2f} {start:>11d} {ours:>12.2f} {default:>23.2f}")
    worst = max(r[4] for r in rows)
    print(f"epochs lost per interruption: worst {worst:.2f}, mean {sum(r[4] for r in rows) / len(rows):.2f} "
          f"(target <= 1; nnU-Net's default loses up to {NNUNET_SAVE_EVERY})")
    epoch_wall = sum(walls) / len(walls)
    per_epoch = sum(writes) / len(walls)
    print(f"checkpoints: {len(writes)} writes of ~{checkpoint_mb:.1f} MB, {sum(writes) / len(writes):.3f} s each; "
          f"{per_epoch:.3f} s per epoch of {epoch_wall:.2f} s wall = {per_epoch / epoch_wall:.1%} of epoch time")


if __name__ == "__main__":
    main()

"""The lock's race harness: N processes call `Lock(path).acquire()` at one instant over a given starting state and
hold it a while; every holder records when it held the lock and whether another holder was inside at the same time.

Used by tests/test_locks.py; run by itself it measures any version of core/locks.py side by side:
    python tests/lock_races.py [--ref GIT_REV] [--trials 20] [--processes 6] [--hold 0.05]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

STATES = ("none", "dead holder", "empty", "truncated", "garbage", "bad types", "other host, no heartbeat")


def dead_pid() -> int:
    """The PID of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def seed_state(path: Path, state: str, dead: int) -> None:
    """Leave `path` as a lock in `state` (see STATES) before the racers start."""
    path.unlink(missing_ok=True)
    record = {"pid": dead, "host": os.uname().nodename, "boot_id": Path("/proc/sys/kernel/random/boot_id")
              .read_text().strip(), "start_time": "1", "slurm_job_id": None, "slurm_restart_count": 0,
              "command": "train", "heartbeat": time.time()}
    if state == "none":
        return
    if state == "dead holder":
        path.write_text(json.dumps(record))
    elif state == "empty":
        path.write_bytes(b"")
    elif state == "truncated":
        path.write_text(json.dumps(record)[:17])
    elif state == "garbage":
        path.write_bytes(os.urandom(64))
    elif state == "bad types":
        path.write_text(json.dumps({**record, "pid": "twelve", "heartbeat": "soon"}))
    elif state == "other host, no heartbeat":
        path.write_text(json.dumps({**record, "host": "node7", "boot_id": "another-boot", "pid": 1,
                                    "heartbeat": time.time() - 3600}))
        os.utime(path, (time.time() - 3600,) * 2)
    else:
        raise ValueError(state)


def _racer(locks_file: str, path: str, inside: str, barrier, results, hold: float) -> None:
    locks = load_locks(locks_file)
    barrier.wait(timeout=30)
    try:
        lock = locks.Lock(Path(path), "the race", "racer", say=lambda line: None).acquire()
    except locks.LockedError:
        results.put(("refused", None, None, False))
        return
    except Exception as err:  # noqa: BLE001 - a traceback is a finding too
        results.put(("error", type(err).__name__, str(err)[:200], False))
        return
    began = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of this machine
    try:
        fd = os.open(inside, os.O_CREAT | os.O_EXCL)
        os.close(fd)
        clash = False
    except FileExistsError:
        clash = True  # another holder is inside right now
    time.sleep(hold)
    if not clash:
        os.unlink(inside)
    ended = time.monotonic()
    lock.release()
    results.put(("held", began, ended, clash))


def load_locks(locks_file: str) -> ModuleType:
    """core/locks.py as it is in `locks_file` (the installed one, or an older version written to a file)."""
    import ibsr_nnunet.core.locks as current

    if os.path.samefile(locks_file, current.__file__):
        return current
    spec = importlib.util.spec_from_file_location("ibsr_nnunet.core.locks_under_test", locks_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # its relative imports resolve inside ibsr_nnunet.core
    return module


def most_holders_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def race(folder: Path, state: str, *, processes: int = 6, trials: int = 20, hold: float = 0.05,
         locks_file: str | None = None) -> dict:
    """Run `trials` races over `state`; the worst trial's number of simultaneous holders, and how many trials had
    two or more, a clash seen from inside, or an error."""
    import ibsr_nnunet.core.locks as current

    locks_file = locks_file or current.__file__
    context = multiprocessing.get_context("fork")
    dead = dead_pid()
    worst, bad_trials, clashes, errors = 0, 0, 0, []
    for trial in range(trials):
        path, inside = folder / f"race{trial}.lock", folder / f"inside{trial}"
        seed_state(path, state, dead)
        barrier, results = context.Barrier(processes), context.Queue()
        racers = [context.Process(target=_racer, args=(locks_file, str(path), str(inside), barrier, results, hold))
                  for _ in range(processes)]
        for racer in racers:
            racer.start()
        outcomes = [results.get(timeout=60) for _ in racers]
        for racer in racers:
            racer.join(timeout=60)
        held = [(o[1], o[2]) for o in outcomes if o[0] == "held"]
        errors += [o[1:3] for o in outcomes if o[0] == "error"]
        at_once = most_holders_at_once(held)
        clash = any(o[3] for o in outcomes)
        worst = max(worst, at_once)
        bad_trials += at_once > 1 or clash
        clashes += clash
    return {"state": state, "trials": trials, "processes": processes, "worst": worst, "bad_trials": bad_trials,
            "clashes": clashes, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", help="measure core/locks.py as it is at this git revision")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--hold", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        locks_file = None
        if args.ref:
            locks_file = os.path.join(tmp, "locks_at_ref.py")
            source = subprocess.run(["git", "show", f"{args.ref}:ibsr_nnunet/core/locks.py"], check=True,
                                    capture_output=True, text=True).stdout
            Path(locks_file).write_text(source)
        print(f"{'state':28} trials  worst  trials with 2+ holders  errors")
        for state in STATES:
            found = race(Path(tmp), state, processes=args.processes, trials=args.trials, hold=args.hold,
                         locks_file=locks_file)
            print(f"{state:28} {found['trials']:6} {found['worst']:6} {found['bad_trials']:23} "
                  f"{len(found['errors'])} {found['errors'][:1]}")


if __name__ == "__main__":
    main()

"""One writer per place and clean process trees, with real processes: two converts or two trains at once, a lock
left by a killed trainer, and `kill -9` of training leaving nothing behind and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli, invoke, said
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED
from ibsr_nnunet.core.locks import Holder, Lock, lock_path, read_holder
from ibsr_nnunet.core.manifest import read_manifest
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.phantom import write_phantoms
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name
from processes import alive, children, start, wait_for


@pytest.mark.workspace
def test_a_live_holder_refuses_a_second_convert_naming_it(misa_copy, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    with Lock(lock_path(ws.raw_dataset), "dataset", "ibsr-nnunet convert elsewhere"):
        result = invoke(ws, "convert", misa_copy)
    assert result.exit_code == EXIT_LOCKED, result.output
    assert f"dataset Dataset501_IBSR18 is being written by PID {os.getpid()}" in said(result)
    assert not ws.raw_dataset.exists()


@pytest.mark.workspace
def test_a_lock_left_by_a_dead_process_is_taken_over(misa_copy, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    dead = subprocess.Popen([sys.executable, "-c", (
        "import os, time\nfrom ibsr_nnunet.core.locks import Lock\n"
        f"Lock({str(lock_path(ws.raw_dataset))!r}, 'dataset', 'convert').acquire()\n"
        "print('held', flush=True); os._exit(0)")], stdout=subprocess.PIPE, text=True)  # exits holding it
    assert dead.stdout.readline().strip() == "held"
    dead.wait()
    assert read_holder(lock_path(ws.raw_dataset)).pid == dead.pid
    result = invoke(ws, "convert", misa_copy)
    assert result.exit_code == 0, result.output
    assert f"took over the lock on dataset Dataset501_IBSR18 from PID {dead.pid}" in said(result)
    assert "is gone" in said(result) and not lock_path(ws.raw_dataset).exists()


@pytest.mark.integration
def test_two_converts_at_once_one_wins_the_other_is_refused_and_the_dataset_is_whole(tmp_path):
    write_phantoms(tmp_path / "big", 6, layout="misa", size="full", seed=1)  # seconds to convert: time to collide
    write_phantoms(tmp_path / "small", 6, layout="misa", size="small", seed=2)
    ws = tmp_path / "ws"
    first = start(ws, "convert", str(tmp_path / "big"), "--jobs", "1")
    assert wait_for(lambda: lock_path(Workspace.open(ws).raw_dataset).exists(), 60)
    second = cli(ws, "convert", str(tmp_path / "small"))
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    assert second.returncode == EXIT_LOCKED, second.stdout + second.stderr
    assert f"is being written by PID {first.pid}" in " ".join(second.stderr.split())
    manifest = read_manifest(Workspace.open(ws)).as_record()
    assert Path(manifest["source"]) == tmp_path / "big" and len(manifest["cases"]) == 6
    assert not list((ws / "nnUNet_raw").glob(".tmp-*"))


@pytest.mark.integration
def test_kill_9_of_train_leaves_no_process_and_the_next_call_resumes(planned_copy):
    """Two trainers on one fold: the second is refused; `kill -9` of the first after its first checkpoint leaves
    none of its processes (data-augmentation workers included) after 10 s, and the next call takes the dead
    holder's lock over and resumes."""
    ws = planned_copy
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", "6", "--iterations-per-epoch", "6", "--device", "cpu"]
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(6, 6))
    first = start(ws.root, *args, env={"nnUNet_n_proc_DA": "2"})
    try:
        assert wait_for(lambda: (folder / "checkpoint_latest.pth").exists(), 300), first.stdout.read()
        second = cli(ws, *args)
        assert second.returncode == EXIT_LOCKED, second.stdout + second.stderr
        assert f"is being written by PID {first.pid}" in " ".join(second.stderr.split())
        workers = children(first.pid)
        assert len(workers) >= 2, "nnU-Net's data-augmentation workers should be running"
        first.kill()  # SIGKILL: what the OOM killer and a lost node do
        first.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 10), [p for p in workers if alive(p)]
    finally:
        if first.poll() is None:
            first.kill()
    resumed = cli(ws, *args)
    text = " ".join((resumed.stdout + resumed.stderr).split())
    assert resumed.returncode == 0, text
    assert f"took over the lock on 2d fold 0 ({trainer_name(6, 6)}) from PID {first.pid}" in text
    epoch = int(text.split(" at epoch ")[1].split()[0])
    assert 1 <= epoch < 6 and "from checkpoint_latest.pth" in text
    assert (folder / "checkpoint_final.pth").is_file()


@pytest.mark.integration
def test_kill_9_of_baseline_training_then_a_rerun_resumes(converted_copy):
    ws = converted_copy
    args = ["baseline", "train", "--model", "unet2d", "--loss", "dice", "--device", "cpu", "--epochs", "6",
            "--iterations-per-epoch", "4", "--width", "8", "--patch-size", "32", "--batch-size", "2"]
    run = ws.baselines / "unet2d__dice"
    first = start(ws.root, *args)
    try:
        assert wait_for(lambda: (run / "checkpoint.pt").exists(), 300)
        assert not children(first.pid), "the baselines start no worker processes"
        first.kill()
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    done_before = json.loads((run / "run.json").read_text())["epochs_done"]
    resumed = cli(ws, *args)
    text = " ".join((resumed.stdout + resumed.stderr).split())
    assert resumed.returncode == 0, text
    assert f"resuming {run} at epoch {done_before}" in text and done_before >= 1
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 6


BASELINE_ARGS = ["baseline", "train", "--model", "unet2d", "--loss", "dice", "--device", "cpu", "--epochs", "40",
                 "--iterations-per-epoch", "5", "--width", "8", "--depth", "3", "--patch-size", "32",
                 "--batch-size", "2"]


def take_over_from_another_host(lock_file: Path) -> Holder:
    """What a taker on another host does to a holder it judged stale: rename its own record over the lock."""
    other = Holder(pid=4242, host="node7", boot_id="another-boot", start_time="1", slurm_job_id=None,
                   slurm_restart_count=0, command="ibsr-nnunet train", heartbeat=time.time())
    replacement = lock_file.with_name("replacement")
    replacement.write_bytes(other.lock_file_bytes())
    os.rename(replacement, lock_file)
    return other


def epochs_done(run: Path) -> int:
    try:
        return json.loads((run / "run.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.integration
def test_a_stopped_baseline_training_keeps_its_lock_and_finishes_alone(converted_copy):
    """`kill -STOP` of a training for 20 heartbeats (1 s each): a second training of the same run is refused with
    exit 73 naming the stopped one; after `kill -CONT` the first finishes, and the run's history has one run."""
    ws = converted_copy
    run = ws.baselines / "unet2d__dice"
    args = [*BASELINE_ARGS[:9], "12", *BASELINE_ARGS[10:]]
    first = start(ws.root, *args, env={"IBSR_LOCK_HEARTBEAT": "1"})
    try:
        assert wait_for(lambda: epochs_done(run) >= 1, 300)
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(20)
        second = cli(ws, *args, env={"IBSR_LOCK_HEARTBEAT": "1"})
        assert second.returncode == EXIT_LOCKED, second.stdout + second.stderr
        assert f"is being written by PID {first.pid}" in " ".join(second.stderr.split())
        os.kill(first.pid, signal.SIGCONT)
        output, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
    assert first.returncode == 0, output
    assert "took over" not in output and epochs_done(run) == 12
    lines = [json.loads(line) for line in (run / "runs.jsonl").read_text().splitlines()]
    assert [(line["event"], line.get("reason")) for line in lines] == [
        ("start", None), ("start", None), ("end", "locked"), ("end", "finished")]


@pytest.mark.integration
def test_a_baseline_training_whose_lock_is_taken_over_stops_before_its_next_checkpoint(converted_copy):
    """Another host takes the run's lock over (as after a long pause there): the training stops at its next
    checkpoint with exit 73 and one sentence, and writes nothing more into the run."""
    ws = converted_copy
    run = ws.baselines / "unet2d__dice"
    first = start(ws.root, *BASELINE_ARGS, env={"IBSR_LOCK_HEARTBEAT": "0.2"})
    try:
        assert wait_for(lambda: epochs_done(run) >= 1, 300)
        other = take_over_from_another_host(lock_path(run))
        taken_at = epochs_done(run)
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    text = " ".join(output.split())
    assert first.returncode == EXIT_LOCKED, text
    assert f"lost the lock on baseline run unet2d__dice: {lock_path(run)} now names PID 4242 on node7" in text
    assert epochs_done(run) <= taken_at + 1 < 40  # at most the epoch under way when it was taken
    assert read_holder(lock_path(run)).token == other.token
    assert json.loads((run / "runs.jsonl").read_text().splitlines()[-1])["event"] == "start"  # no end line of ours


@pytest.mark.integration
def test_ctrl_c_of_train_is_an_interrupt_in_one_line(planned_copy):
    """SIGINT after the first checkpoint: exit 130 with one line (no traceback), the run recorded as `interrupt`,
    the lock released, and no process left behind."""
    ws = planned_copy
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", "6", "--iterations-per-epoch", "6", "--device", "cpu"]
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(6, 6))
    first = start(ws.root, *args, env={"nnUNet_n_proc_DA": "2"})
    try:
        assert wait_for(lambda: (folder / "checkpoint_latest.pth").exists(), 300), first.stdout.read()
        workers = children(first.pid)
        os.kill(first.pid, signal.SIGINT)
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, output
    assert "Traceback" not in output
    assert "interrupted (Ctrl-C): stopped where it was" in " ".join(output.split())
    ends = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "end"]
    assert [(end["reason"], end["exit_code"]) for end in ends] == [("interrupt", 130)]
    assert not lock_path(folder).exists()
    assert wait_for(lambda: not any(alive(pid) for pid in workers), 10)


@pytest.mark.integration
def test_an_nnunet_fold_whose_lock_is_taken_over_stops_before_its_next_checkpoint(planned_copy):
    """The same for nnU-Net's trainer: exit 73 and one sentence, no checkpoint written after the takeover, no
    end line of its own in runs.jsonl, and no data-augmentation worker left."""
    ws = planned_copy
    args = ["train", "--fold", "0", "--config", "2d", "--epochs", "20", "--iterations-per-epoch", "6", "--device",
            "cpu"]
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(20, 6))
    first = start(ws.root, *args, env={"nnUNet_n_proc_DA": "2", "IBSR_LOCK_HEARTBEAT": "0.2"})
    try:
        assert wait_for(lambda: (folder / "checkpoint_latest.pth").exists(), 300), first.stdout.read()
        workers = children(first.pid)
        take_over_from_another_host(lock_path(folder))
        taken = (folder / "checkpoint_latest.pth").stat().st_mtime_ns
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    text = " ".join(output.split())
    assert first.returncode == EXIT_LOCKED, text
    assert f"lost the lock on 2d fold 0 ({trainer_name(20, 6)}): {lock_path(folder)} now names PID 4242" in text
    assert (folder / "checkpoint_latest.pth").stat().st_mtime_ns == taken
    assert not (folder / "checkpoint_final.pth").exists()
    assert json.loads((folder / "runs.jsonl").read_text().splitlines()[-1])["event"] == "start"
    assert wait_for(lambda: not any(alive(pid) for pid in workers), 10)

"""`plan` is atomic and locked, with real processes: readers/writer locking of the preprocessed dataset at one instant,
pool workers that die with a killed parent, a killed or cut-short plan repaired by the next one, one sentence for
plans and splits that are cut short or of another shape, and for a full disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli, fake_fold, invoke, said
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED
from ibsr_nnunet.core.locks import LockedError, lock_path
from ibsr_nnunet.core.manifest import read_manifest
from ibsr_nnunet.core.readwrite import readers_folder, reading, writing
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import plan_stamp, plans_file, splits_file
from processes import alive, wait_for

REPLAN = "run `ibsr-nnunet plan --force` to plan and preprocess again."
TRAIN = ["train", "--fold", "0", "--config", "2d", "--epochs", "1", "--iterations-per-epoch", "1", "--device", "cpu"]
SUBMIT = ["submit", "--configs", "2d", "--folds", "0", "--device", "cpu", "--gpus-per-job", "0", "--dry-run"]


# ---- readers/writer locking ---------------------------------------------------------------------------------------

def _contender(role: str, index: int, target: Path, barrier, results) -> None:
    """One process of the race: at the barrier, take the writer's or a reader's side, hold it 0.6 s, report."""
    barrier.wait()
    try:
        held = (writing(target, "the folder", f"writer {index}", say=lambda _: None) if role == "writer" else
                reading(target, f"reader-{index}", f"reader {index}", f"reader {index}", say=lambda _: None))
        with held:
            began = time.time()
            time.sleep(0.6)
            results.put((role, index, "held", began, time.time(), ""))
    except LockedError as err:
        results.put((role, index, "refused", 0.0, 0.0, str(err)))


def test_two_writers_and_four_readers_at_one_instant_never_overlap(tmp_path):
    """6 processes released together by a barrier, 4 rounds: at most one writer holds the folder, never while a
    reader does, and every refusal names a live holder (exit 73 material)."""
    target = tmp_path / "Dataset501_IBSR18"
    target.mkdir()
    context = multiprocessing.get_context("fork")
    for _ in range(4):
        barrier, results = context.Barrier(6), context.Queue()
        roles = [("writer", 0), ("writer", 1), *(("reader", i) for i in range(2, 6))]
        processes = [context.Process(target=_contender, args=(role, i, target, barrier, results)) for role, i in roles]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
        held = [o for o in outcomes if o[2] == "held"]
        writers = [o for o in held if o[0] == "writer"]
        assert len(writers) <= 1, outcomes
        for writer in writers:
            overlapping = [o for o in held if o[0] == "reader" and o[3] < writer[4] and writer[3] < o[4]]
            assert not overlapping, outcomes
        for role, _, state, _, _, message in outcomes:
            if state == "refused":
                assert re.search(r"is being (read|written) by PID \d+ on ", message), message
        assert not list(target.parent.glob(f".{target.name}.lock")), "a writer's lock was left behind"
        assert not list(readers_folder(target).glob("*.lock")), "a reader's lock was left behind"


HOLD = """
import sys, time
from pathlib import Path
from ibsr_nnunet.core.readwrite import reading, writing
target = Path(sys.argv[2])
side = writing(target, "it", "ibsr-nnunet plan") if sys.argv[1] == "writer" else reading(
    target, "IbsrTrainer__2d__fold_3", "2d fold 3", "ibsr-nnunet train --fold 3 --config 2d")
with side:
    print("held", flush=True)
    time.sleep(120)
"""


def hold(side: str, ws: Workspace) -> subprocess.Popen:
    """A real process holding the writer's or a reader's lock of the workspace's preprocessed dataset."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, side, str(ws.preprocessed_dataset)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.parametrize("side, refusal", [
    ("reader", "{dataset} is being read by PID {pid} on "),
    ("writer", "nnU-Net's plans and preprocessed data of Dataset501_IBSR18 is being written by PID {pid} on "),
], ids=["a-train-reads", "another-plan-writes"])
def test_plan_is_refused_while_a_train_reads_or_another_plan_writes(planned_copy, side, refusal):
    ws = planned_copy
    before = plans_file(ws).read_bytes(), plan_stamp(ws).read_bytes()
    holder = hold(side, ws)
    try:
        result = invoke(ws, "plan", "--force")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == EXIT_LOCKED, result.output
    assert refusal.format(dataset=ws.preprocessed_dataset, pid=holder.pid) in said(result), said(result)
    if side == "reader":  # and the refused plan let go of its own lock
        assert "`ibsr-nnunet train --fold 3 --config 2d`" in said(result)
        assert not lock_path(ws.preprocessed_dataset).exists()
    assert (plans_file(ws).read_bytes(), plan_stamp(ws).read_bytes()) == before


def test_train_is_refused_while_a_plan_writes_the_preprocessed_data(planned_copy):
    ws = planned_copy
    writer = hold("writer", ws)
    try:
        result = cli(ws, *TRAIN, timeout=120)
    finally:
        writer.kill()
        writer.wait()
    text = " ".join(result.stderr.split())
    assert result.returncode == EXIT_LOCKED, result.stdout + result.stderr
    assert f"{ws.preprocessed_dataset} is being written by PID {writer.pid} on " in text
    assert "`ibsr-nnunet plan`" in text
    assert "Traceback" not in result.stderr
    assert not ws.results_dataset.exists(), "a refused train made its fold folder"


# ---- pool workers ---------------------------------------------------------------------------------------------------

POOL = """
import multiprocessing, time, types
from ibsr_nnunet.nnunet.environment import fork_pools
nnunet_module = types.SimpleNamespace(multiprocessing=multiprocessing)
with fork_pools(nnunet_module):
    pool = nnunet_module.multiprocessing.get_context("spawn").Pool(2)
    pool.map_async(time.sleep, [30, 30, 30, 30], chunksize=1)
    time.sleep(1)
    print(*[p.pid for p in pool._pool], flush=True)
    time.sleep(60)
"""


def test_pool_workers_opened_through_fork_pools_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", POOL], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    try:
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 2), [p for p in workers if alive(p)]
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---- cut-short or odd files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, sentence", [
    (lambda text: text[:200], "is not valid JSON (cut short or edited by hand: "),
    (lambda text: "[]", 'holds no nnU-Net plans (no "configurations" table)'),
    (lambda text: '{"configurations": [1]}', 'holds no nnU-Net plans (no "configurations" table)'),
], ids=["cut-short", "a-list", "configurations-a-list"])
@pytest.mark.parametrize("command", [TRAIN, ["ensemble"], SUBMIT], ids=["train", "ensemble", "submit"])
def test_damaged_plans_are_refused_in_the_same_sentence(planned_copy, command, damage, sentence):
    ws = planned_copy
    if command == ["ensemble"]:
        fake_fold(ws, "IbsrTrainer", "2d", 0)  # a finished fold, so that ensemble goes on to nnU-Net's plans
    plans_file(ws).write_text(damage(plans_file(ws).read_text()))
    result = invoke(ws, *command)
    assert result.exit_code == 1, result.output
    assert f"{plans_file(ws)} {sentence}" in said(result)
    assert said(result).endswith(REPLAN) and "Traceback" not in result.output


@pytest.mark.parametrize("content", ['{"0": {"train": [], "val": []}}', "[]", '[{"train": "IBSR_01"}]'],
                         ids=["object", "empty", "train-not-a-list"])
@pytest.mark.parametrize("command", [TRAIN, SUBMIT], ids=["train", "submit"])
def test_splits_of_another_shape_are_refused_in_one_sentence(planned_copy, command, content):
    ws = planned_copy
    splits_file(ws).write_text(content)
    result = invoke(ws, *command)
    assert result.exit_code == 1, result.output
    assert f"{splits_file(ws)} is not a list of folds like" in said(result) and said(result).endswith(REPLAN)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("stamp, refusal", [
    (None, "is incomplete: it has no ibsr_plan.json, so `ibsr-nnunet plan` did not finish there"),
    ({"configurations": ["2d"]}, "nnUNetPlans.json is stale: not planned by ibsr-nnunet"),
    ({"configurations": ["3d_fullres"], "raw_fingerprint": "MANIFEST"},
     "--config 2d was not preprocessed by the last `ibsr-nnunet plan` (it did 3d_fullres); run `ibsr-nnunet plan "
     "--configs 2d,3d_fullres`"),
], ids=["no-stamp", "no-fingerprint", "not-preprocessed"])
def test_train_refuses_plans_that_plan_did_not_finish(planned_copy, stamp, refusal):
    ws = planned_copy
    plan_stamp(ws).unlink()
    if stamp is not None:
        fingerprint = read_manifest(ws).fingerprint
        plan_stamp(ws).write_text(json.dumps({k: fingerprint if v == "MANIFEST" else v for k, v in stamp.items()}))
    result = invoke(ws, *TRAIN)
    assert result.exit_code == 1, result.output
    assert refusal in said(result) and "Traceback" not in result.output


# ---- real plans and trainings (nnU-Net) -----------------------------------------------------------------------------

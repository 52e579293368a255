"""`plan` is atomic and locked, with real processes: readers/writer locking of the preprocessed dataset at one instant,
pool workers that die with a killed parent, a killed or cut-short plan repaired by the next one, one sentence for
plans and splits that are cut short or of another shape, and for a full disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import cli
from ibsr_nnunet.core.exitcodes import EXIT_LOCKED
from ibsr_nnunet.core.locks import lock_path
from ibsr_nnunet.core.manifest import read_manifest
from ibsr_nnunet.core.readwrite import readers_folder
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import plan_stamp, plans_file
from processes import alive, children, start, wait_for

TRAIN = ["train", "--fold", "0", "--config", "2d", "--epochs", "1", "--iterations-per-epoch", "1", "--device", "cpu"]


def preprocessed_cases(ws: Workspace, configuration: str) -> int:
    return len(list((ws.preprocessed_dataset / f"nnUNetPlans_{configuration}").glob("IBSR_*.pkl")))


@pytest.mark.integration
def test_a_plan_killed_mid_preprocessing_leaves_no_worker_then_train_refuses_and_plan_redoes_it(planned_copy):
    """SIGKILL of `plan --force` while nnU-Net's pool preprocesses: its workers are gone within 2 s, `train` refuses
    the half-made folder in one sentence within a minute (it hung before), and the next plain `plan` redoes it."""
    ws = planned_copy
    data = ws.preprocessed_dataset / "nnUNetPlans_2d"
    for configuration in ("2d", "3d_fullres"):  # so that the new data folder shows when preprocessing starts
        shutil.rmtree(ws.preprocessed_dataset / f"nnUNetPlans_{configuration}")
    planning = start(ws.root, "plan", "--force", "--jobs", "2")
    try:
        assert wait_for(lambda: data.is_dir() and any(data.iterdir()) and children(planning.pid), 300, poll=0.01), \
            planning.stdout.read() if planning.poll() is not None else "preprocessing never started"
        workers = children(planning.pid)
        planning.kill()
        planning.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 2), [p for p in workers if alive(p)]
    finally:
        if planning.poll() is None:
            planning.kill()
        planning.communicate()
    assert workers and not plan_stamp(ws).exists()
    began = time.time()
    refused = cli(ws, *TRAIN, timeout=120)
    text = " ".join(refused.stderr.split())
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{ws.preprocessed_dataset} is incomplete: it has no ibsr_plan.json" in text and "Traceback" not in text
    assert time.time() - began < 60
    again = cli(ws, "plan", "--jobs", "2")
    assert again.returncode == 0 and "up to date" not in again.stdout, again.stdout + again.stderr
    assert plan_stamp(ws).is_file() and preprocessed_cases(ws, "2d") == preprocessed_cases(ws, "3d_fullres") == 5


@pytest.mark.integration
def test_a_running_train_refuses_plan_and_a_running_plan_refuses_train(planned_copy):
    ws = planned_copy
    training = start(ws.root, "train", "--fold", "1", "--config", "2d", "--epochs", "30", "--iterations-per-epoch",
                     "5", "--device", "cpu", env={"nnUNet_n_proc_DA": "1"})
    reader = readers_folder(ws.preprocessed_dataset) / "IbsrTrainer_30ep_5it__2d__fold_1.lock"
    stamp = plan_stamp(ws).read_bytes()
    try:
        assert wait_for(reader.exists, 180)
        refused = cli(ws, "plan", "--force", timeout=120)
    finally:
        training.kill()
        training.communicate()
    text = " ".join(refused.stderr.split())
    assert refused.returncode == EXIT_LOCKED, refused.stdout + refused.stderr
    assert f"{ws.preprocessed_dataset} is being read by PID {training.pid} on " in text
    assert "`ibsr-nnunet train --fold 1 --config 2d`" in text and plan_stamp(ws).read_bytes() == stamp

    planning = start(ws.root, "plan", "--force", "--jobs", "2")  # the killed train's reader lock is stale: no refusal
    try:
        assert wait_for(lock_path(ws.preprocessed_dataset).exists, 120)
        refused = cli(ws, *TRAIN, timeout=120)
        output, _ = planning.communicate(timeout=600)
    finally:
        if planning.poll() is None:
            planning.kill()
            planning.communicate()
    text = " ".join(refused.stderr.split())
    assert refused.returncode == EXIT_LOCKED, refused.stdout + refused.stderr
    assert f"{ws.preprocessed_dataset} is being written by PID {planning.pid} on " in text
    assert "`ibsr-nnunet plan`" in text
    assert planning.returncode == 0, output
    assert not (ws.results_dataset / "IbsrTrainer_1ep_1it__nnUNetPlans__2d").exists()


@pytest.mark.integration
@pytest.mark.parametrize("force", [True, False], ids=["plan-force", "plan"])
def test_plan_repairs_cut_short_plans(planned_copy, force):
    """The refusal's own advice works: nnU-Net's planner merged with the old plans file and crashed on it."""
    ws = planned_copy
    plans_file(ws).write_text(plans_file(ws).read_text()[:200])
    result = cli(ws, "plan", "--jobs", "2", *(["--force"] if force else []))
    assert result.returncode == 0 and "up to date" not in result.stdout, result.stdout + result.stderr
    assert {"2d", "3d_fullres"} <= set(json.loads(plans_file(ws).read_text())["configurations"])
    assert json.loads(plan_stamp(ws).read_text())["raw_fingerprint"] == read_manifest(ws).fingerprint


@pytest.mark.integration
def test_a_full_disk_during_plan_is_one_sentence(converted_copy):
    ws = converted_copy
    folder = ws.preprocessed_dataset.parent
    aside = Path(shutil.move(folder, ws.root / "preprocessed-aside"))
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a 3 MB tmpfs cannot be mounted here ({mounted.stderr.decode().strip()})")
    try:
        shutil.copytree(aside, folder, dirs_exist_ok=True)
        result = cli(ws, "plan", "--jobs", "2")
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    text = " ".join(result.stderr.split())
    assert result.returncode == 1 and "error: " in text, result.stdout + result.stderr
    error = text[text.index("error: "):]  # after nnU-Net's progress bars
    assert error.startswith(f"error: no space left on the disk of {ws.preprocessed_dataset} while writing ")
    assert error.endswith("run `ibsr-nnunet plan --force`.") and "Traceback" not in result.stderr

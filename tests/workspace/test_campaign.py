"""The SLURM campaign (submit, status, `scontrol show job` parsing) with stand-ins for SLURM's commands: FakeSlurm
as the runner, or a fake `scontrol` first on PATH for the command line. The real cluster is in test_slurm_cluster.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import copy_workspace, invoke, said
from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.core import provenance
from ibsr_nnunet.core.errors import InputError

CLI = ["/opt/venv/bin/python", "-m", "ibsr_nnunet"]
CLUSTER = {  # one partition, the default, on one node with 2 GPUs: what `scontrol -o show partition|node` answers
    "partition": "PartitionName=debug Default=YES MaxTime=UNLIMITED Nodes=n1\n",
    "node": "NodeName=n1 CPUTot=16 RealMemory=64000 Gres=gpu:2 Partitions=debug\n",
}


from ibsr_nnunet.campaign import slurm, submit
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name

SHOW_JOB = """\
JobId=12 ArrayJobId=12 ArrayTaskId=2-4%2 JobName=ibsr-nnunet-2d JobState=PENDING Reason=Resources Dependency=(null) Requeue=1 Restarts=0 ExitCode=0:0 Command=/a b/x.sbatch
JobId=13 ArrayJobId=12 ArrayTaskId=0 JobName=ibsr-nnunet-2d JobState=RUNNING Reason=None Requeue=1 Restarts=2 ExitCode=0:0
JobId=14 ArrayJobId=12 ArrayTaskId=1 JobName=ibsr-nnunet-2d JobState=FAILED Reason=NonZeroExitCode Restarts=0 ExitCode=1:0
JobId=15 JobName=ibsr-final JobState=CANCELLED Reason=DependencyNeverSatisfied Restarts=0 ExitCode=0:0
"""  # noqa: E501 (scontrol's one-line records, verbatim)


def test_scontrol_show_job_is_parsed_per_array_task():
    states = slurm.parse_show_job(SHOW_JOB)
    assert {k: (s.state, s.restarts) for k, s in states.items() if "_" in k} == {
        "12_0": ("RUNNING", 2), "12_1": ("FAILED", 0), "12_2": ("PENDING", 0), "12_3": ("PENDING", 0),
        "12_4": ("PENDING", 0)}
    assert states["15"].state == "CANCELLED" and states["15"].reason == "DependencyNeverSatisfied"
    assert states["12_0"].active and not states["12_1"].active


class FakeSlurm:
    """sbatch hands out IDs and records argv; scontrol shows whatever `states` says (key -> state)."""

    def __init__(self):
        self.next_id, self.calls, self.states = 100, [], {}

    def __call__(self, argv, **kwargs):
        self.calls.append(argv)
        if argv[0] == "sbatch":
            self.next_id += 1
            array = next((a.split("=", 1)[1] for a in argv if a.startswith("--array=")), None)
            for task in (array.split(",") if array else []):
                self.states[f"{self.next_id}_{task}"] = "PENDING"
            if not array:
                self.states[str(self.next_id)] = "PENDING"
            return subprocess.CompletedProcess(argv, 0, f"{self.next_id}\n", "")
        if argv[:3] == ["scontrol", "-o", "show"] and argv[3] in ("partition", "node"):
            return subprocess.CompletedProcess(argv, 0, CLUSTER[argv[3]], "")
        if argv[0] == "scontrol":
            lines = []
            for key, state in self.states.items():
                job, _, task = key.partition("_")
                lines.append(f"JobId={key.replace('_', '9')} "
                             + (f"ArrayJobId={job} ArrayTaskId={task} " if task else "")
                             + f"JobState={state} Reason=None Restarts=0")
            return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def planned_workspace(planned_ws: Workspace, tmp_path: Path) -> Workspace:
    """A copy of the session's planned phantom workspace, at a path with a space in it."""
    return copy_workspace(planned_ws, tmp_path / "ws x")


def test_submit_again_skips_queued_running_and_finished_and_replaces_a_pending_final(planned_ws, tmp_path):
    ws = planned_workspace(planned_ws, tmp_path)
    slurm = FakeSlurm()
    request = submit.SubmitRequest(configs=("2d", "3d_fullres"), folds=(0, 1), baselines=("unet2d__dice_ce",), epochs=3,
                               iterations=2, device="cpu", resources=sbatch.Resources(gpus_per_job=0))
    first = submit.submit(ws, request, cli=CLI, runner=slurm, say=lambda _: None)
    assert [(s.kind, s.name, s.job_id) for s in first.submitted] == [
        ("fold", "2d", "101"), ("fold", "3d_fullres", "102"), ("baseline", "unet2d__dice_ce", "103"),
        ("final", "final", "104")]
    final_argv = first.submitted[-1].argv
    assert "--dependency=afterok:101:102:103" in final_argv and "--kill-on-invalid-dep=yes" in final_argv
    assert all(s.script.is_file() for s in first.submitted)

    again = submit.submit(ws, request, cli=CLI, runner=slurm, say=lambda _: None)
    assert again.submitted == [] and len(again.skipped) == 6

    # 2d fold 0 finished, 2d fold 1 failed, 3d_fullres still running, baseline done: only 2d fold 1 again
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(3, 2))
    (folder / "validation").mkdir(parents=True)
    (folder / "checkpoint_final.pth").write_bytes(b"x")
    (folder / "validation" / "summary.json").write_text("{}")
    provenance.write_provenance(folder, provenance.dataset_fingerprint(ws))  # trained on this workspace's dataset
    slurm.states.update({"101_0": "COMPLETED", "101_1": "FAILED", "102_0": "RUNNING", "103": "COMPLETED"})
    third = submit.submit(ws, request, cli=CLI, runner=slurm, say=lambda _: None)
    assert [(s.kind, s.name, s.folds) for s in third.submitted] == [("fold", "2d", [1]), ("final", "final", [])]
    assert "--array=1" in third.submitted[0].argv
    assert ["scancel", "104"] in slurm.calls  # the old final waited for the failed task: replaced
    assert f"--dependency=afterok:{third.submitted[0].job_id}:102_0:102_1" in third.submitted[-1].argv
    records = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    assert [r["job_id"] for r in records] == ["101", "102", "103", "104", "105", "106"]


def test_submit_refuses_without_plans_and_dry_run_writes_nothing(planned_ws, tmp_path):
    ws = Workspace.open(tmp_path / "empty")
    with pytest.raises(InputError, match="plan --configs 2d,3d_fullres"):
        submit.submit(ws, submit.SubmitRequest(), cli=CLI, runner=FakeSlurm())
    ws = planned_workspace(planned_ws, tmp_path)
    slurm = FakeSlurm()
    result = submit.submit(ws, submit.SubmitRequest(folds=(0,), dry_run=True), cli=CLI, runner=slurm)
    assert [s.kind for s in result.submitted] == ["fold", "fold", "final"]
    assert not [c for c in slurm.calls if c[0] == "sbatch"] and not ws.slurm.exists()


# ---- the command line, with a fake `scontrol` first on PATH ------------------------------------------------------

def fake_scontrol(folder: Path, jobs: str) -> Path:
    """A `scontrol` that answers `-o show partition|node|job` from canned text and logs its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    for what, text in {"partition": CLUSTER["partition"], "node": CLUSTER["node"], "job": jobs}.items():
        (folder / f"show-{what}.txt").write_text(text)
    script = folder / "scontrol"
    script.write_text(f'#!/bin/bash\necho "$*" >> "{folder}/scontrol.log"\n'
                      f'[ "$1 $2" = "-o show" ] && [ -f "{folder}/show-$3.txt" ] || exit 1\n'
                      f'cat "{folder}/show-$3.txt"\n')
    script.chmod(0o755)
    return folder


def test_cli_submit_dry_run_prints_scripts_and_submits_nothing(planned_copy, tmp_path, monkeypatch):
    bin_dir = fake_scontrol(tmp_path / "bin", "")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = invoke(planned_copy, "submit", "--configs", "2d", "--folds", "0,1", "--baselines", "unet2d__dice_ce",
                    "--epochs", "3", "--iterations-per-epoch", "2", "--device", "cpu", "--gpus-per-job", "0",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("# ===== sbatch command line =====") == 3  # 2d array, baseline, final
    assert "#SBATCH --array=0,1" in result.output or "--array=0,1" in result.output
    assert "dry run: 3 job(s) would be submitted; nothing was." in said(result)
    assert not planned_copy.slurm.exists()
    assert "-o show job" in (bin_dir / "scontrol.log").read_text()  # it asked the (fake) controller


def test_cli_status_reads_jobs_and_the_controllers_states(planned_copy, tmp_path, monkeypatch):
    slurm = FakeSlurm()
    request = submit.SubmitRequest(configs=("2d",), folds=(0, 1), baselines=(), epochs=3, iterations=2, device="cpu",
                             resources=sbatch.Resources(gpus_per_job=0))
    submit.submit(planned_copy, request, cli=CLI, runner=slurm, say=lambda _: None)
    jobs = ("JobId=200 ArrayJobId=101 ArrayTaskId=0 JobState=RUNNING Reason=None Restarts=2\n"
            "JobId=201 ArrayJobId=101 ArrayTaskId=1 JobState=FAILED Reason=NonZeroExitCode Restarts=0\n"
            "JobId=102 JobState=PENDING Reason=Dependency Restarts=0\n")
    bin_dir = fake_scontrol(tmp_path / "bin", jobs)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = invoke(planned_copy, "status", "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert table["slurm_answered"] is True
    rows = {(r["kind"], r["name"], r["fold"]): r for r in table["jobs"]}
    assert set(rows) == {("fold", "2d", 0), ("fold", "2d", 1), ("final", "final", None)}
    assert (rows[("fold", "2d", 0)]["state"], rows[("fold", "2d", 0)]["restarts"]) == ("RUNNING", 2)
    assert rows[("fold", "2d", 1)]["state"] == "FAILED" and not rows[("fold", "2d", 1)]["finished"]
    assert rows[("final", "final", None)]["state"] == "PENDING" and rows[("final", "final", None)]["job_id"] == "102"
    assert rows[("fold", "2d", 0)]["epochs_total"] == 3

    rendered = invoke(planned_copy, "status")
    assert rendered.exit_code == 0, rendered.output
    assert "SLURM campaign" in said(rendered) and "101_0" in said(rendered) and "101_1 FAILED" in said(rendered)

    (bin_dir / "scontrol").write_text("#!/bin/bash\nexit 1\n")  # the controller does not answer
    silent = invoke(planned_copy, "status")
    assert silent.exit_code == 0 and "SLURM did not answer" in said(silent)


def test_cli_status_without_a_campaign(converted_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_scontrol(tmp_path / 'bin', '')}:{os.environ['PATH']}")
    result = invoke(converted_copy, "status")
    assert result.exit_code == 0 and "no campaign recorded" in said(result) and "ibsr-nnunet submit" in said(result)


def test_a_hand_submitted_fold_registers_itself_and_submit_never_submits_it_again(planned_ws, tmp_path, monkeypatch):
    from ibsr_nnunet.campaign import jobs

    ws = planned_workspace(planned_ws, tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "200")
    record = jobs.register_running_fold(ws, "2d", 0, trainer=trainer_name(3, 2), epochs=3, iterations=2)
    assert (record["job_id"], record["folds"], record["array"], record["array_parallel"]) == ("200", [0], False, None)
    assert jobs.register_running_fold(ws, "2d", 0, trainer=trainer_name(3, 2), epochs=3, iterations=2) is None
    assert jobs.state_key(record, 0) == "200" and not (ws.slurm / ".jobs.json.lock").exists()

    slurm = FakeSlurm()
    slurm.states["200"] = "RUNNING"
    request = submit.SubmitRequest(configs=("2d",), folds=(0, 1, 2), epochs=3, iterations=2, device="cpu",
                             resources=sbatch.Resources(gpus_per_job=0, array_parallel=2))
    result = submit.submit(ws, request, cli=CLI, runner=slurm, say=lambda _: None)
    assert [(s.kind, s.folds) for s in result.submitted] == [("fold", [1, 2]), ("final", [])]
    assert "--array=1,2%2" in result.submitted[0].argv
    assert "2d fold 0: job 200 is RUNNING" in result.skipped
    assert f"--dependency=afterok:{result.submitted[0].job_id}:200" in result.submitted[1].argv
    records = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    assert [(r["job_id"], r["array_parallel"]) for r in records] == [("200", None), ("101", 2), ("102", None)]


def test_cli_script_prints_one_fold_and_refuses_a_fold_that_does_not_exist(planned_copy, tmp_path):
    done = invoke(planned_copy, "script", "--fold", "1", "--config", "3d_fullres", "--epochs", "3",
                  "--iterations-per-epoch", "2", "--setup", "module load cuda/12.4", "--time", "2:00:00",
                  "--stage-data")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("#!/bin/bash\n") and "FOLD=1\n" in done.stdout and "--array" not in done.stdout
    assert "module load cuda/12.4\nset -u\n" in done.stdout and " --stage-data\n" in done.stdout
    assert ("slurm-<job id>.out" in done.stderr
            and str(planned_copy.slurm / "jobs.json") in " ".join(done.stderr.split()))
    subprocess.run(["bash", "-n"], input=done.stdout, text=True, check=True)
    bad = invoke(planned_copy, "script", "--fold", "7", "--config", "2d")
    assert bad.exit_code != 0 and "--folds 7 do not exist" in bad.output
    grace = invoke(planned_copy, "script", "--fold", "0", "--config", "2d", "--time", "5", "--signal-grace", "300")
    assert grace.exit_code != 0 and "is not less than --time" in grace.output
    unregistered = invoke(planned_copy, "register-job", "--fold", "0", "--config", "2d", env={"SLURM_JOB_ID": ""})
    assert unregistered.exit_code != 0 and "SLURM_JOB_ID is not set" in unregistered.output


def test_submit_trains_each_preset_in_its_own_array_and_status_names_it(planned_ws, tmp_path):
    from helpers import restored_environ
    from ibsr_nnunet.campaign.status import status
    from ibsr_nnunet.nnunet.environment import configure
    from ibsr_nnunet.nnunet.plan import plan
    from ibsr_nnunet.nnunet.presets import PRESET_TABLE

    ws = planned_workspace(planned_ws, tmp_path)
    resenc_m, resenc_l = PRESET_TABLE["resenc-m"], PRESET_TABLE["resenc-l"]
    gpu = sbatch.Resources(gpus_per_job=1, gpu_memory=24)
    too_big = submit.SubmitRequest(configs=("2d",), folds=(0,), presets=(resenc_m, PRESET_TABLE["resenc-xl"]),
                                   epochs=3, iterations=2, resources=gpu)
    slurm = FakeSlurm()
    with pytest.raises(InputError, match=r"^--gpu-memory 24 GB is less than the GPU memory nnU-Net sizes resenc-xl "
                                         r"\(40 GB\) for"):
        submit.submit(ws, too_big, cli=CLI, runner=slurm)
    with pytest.raises(InputError, match=r"nnUNetResEncUNetLPlans\.json does not exist: plan first with .* plan "
                                         r"--configs 2d --presets resenc-l`"):
        submit.submit(ws, submit.SubmitRequest(configs=("2d",), presets=(resenc_l,), resources=gpu), cli=CLI,
                      runner=slurm)
    assert slurm.calls == []  # refused before SLURM was asked anything
    with restored_environ():
        configure(ws, 1)
        [planned] = plan(ws, ("2d", "3d_fullres"), presets=(resenc_m,), say=lambda _: None)
    assert planned.reused == ("2d", "3d_fullres") and planned.preprocessed == ()

    request = submit.SubmitRequest(configs=("2d",), folds=(0, 1), presets=(PRESET_TABLE["default"], resenc_m),
                                   epochs=3, iterations=2, device="cpu", resources=gpu)
    first = submit.submit(ws, request, cli=CLI, runner=slurm, say=lambda _: None)
    assert [(s.kind, s.label, s.job_id) for s in first.submitted] == [
        ("fold", "2d", "101"), ("fold", "resenc-m 2d", "102"), ("final", "final", "103")]
    assert first.submitted[1].script.name.startswith("nnunet-resencm-2d-")
    assert "--device cpu --preset resenc-m" in first.submitted[1].script.read_text()
    records = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    assert [(r["name"], r.get("preset")) for r in records] == [("2d", "default"), ("2d", "resenc-m"), ("final", None)]
    again = submit.submit(ws, request, cli=CLI, runner=slurm, say=lambda _: None)
    assert again.submitted == [] and "resenc-m 2d fold 1: job 102_1 is PENDING" in again.skipped

    # a finished resenc-m fold is its own, not the default's
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(3, 2), plans=resenc_m.plans)
    (folder / "validation").mkdir(parents=True)
    (folder / "checkpoint_final.pth").write_bytes(b"x")
    (folder / "validation" / "summary.json").write_text("{}")
    provenance.write_provenance(folder, provenance.dataset_fingerprint(ws))
    report = status(ws, runner=slurm)
    rows = {(r.kind, r.name, r.fold): r for r in report.rows}
    assert set(rows) == {("fold", "2d", 0), ("fold", "2d", 1), ("fold", "resenc-m 2d", 0),
                         ("fold", "resenc-m 2d", 1), ("final", "final", None)}
    assert rows[("fold", "resenc-m 2d", 0)].finished and not rows[("fold", "2d", 0)].finished


def test_cli_script_of_a_preset_that_does_not_fit_the_gpus_is_refused(planned_copy):
    result = invoke(planned_copy, "script", "--fold", "0", "--config", "3d_fullres", "--preset", "resenc-l",
                    "--gpu-memory", "16")
    assert result.exit_code == 1
    assert said(result).startswith("error: --gpu-memory 16 GB is less than the GPU memory nnU-Net sizes resenc-l "
                                   "(24 GB) for: it would run out of memory; use default, resenc-m instead.")
    unplanned = invoke(planned_copy, "script", "--fold", "0", "--config", "2d", "--preset", "resenc-m")
    assert unplanned.exit_code == 1 and "plan --configs 2d --presets resenc-m`" in said(unplanned)
    unknown = invoke(planned_copy, "script", "--fold", "0", "--config", "2d", "--preset", "resenc-q")
    assert unknown.exit_code == 2 and "resenc-q" in unknown.output


def test_cli_submit_asks_for_views_and_the_baseline_ensemble(converted_copy, tmp_path, monkeypatch):
    bin_dir = fake_scontrol(tmp_path / "bin", "")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    args = ["submit", "--configs", "", "--baselines", "unet2d__dice_ce,unet2d_sagittal__dice_ce,unet3d__dice_ce",
            "--epochs", "3", "--iterations-per-epoch", "2", "--device", "cpu", "--gpus-per-job", "0"]
    result = invoke(converted_copy, *args, "--baseline-ensemble", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "baseline train --model unet2d --loss dice_ce --view sagittal" in result.output
    assert "baseline predict --model unet2d --loss dice_ce --view sagittal --device cpu" in result.output
    assert ("baseline ensemble --members unet2d__dice_ce,unet2d_sagittal__dice_ce,unet3d__dice_ce --device cpu"
            in result.output)
    assert " ensemble --trainer" not in result.output  # no nnU-Net configuration: no nnU-Net ensemble
    assert "dry run: 4 job(s) would be submitted; nothing was." in said(result)
    without = invoke(converted_copy, *args, "--dry-run")
    assert "dry run: 3 job(s)" in said(without) and "final job: not submitted" in said(without)
    one = invoke(converted_copy, "submit", "--configs", "", "--baselines", "unet2d__dice_ce", "--baseline-ensemble",
                 "--device", "cpu", "--gpus-per-job", "0", "--dry-run")
    assert one.exit_code == 1 and "--baseline-ensemble fuses the baselines of --baselines, which names 1" in said(one)

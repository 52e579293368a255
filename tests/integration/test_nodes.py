"""The campaign on a real local SLURM cluster of several nodes (slurm/local-cluster.sh with IBSR_SLURM_NODES; one
slurmd per node on this host), CPU only: array tasks spread over nodes, a node lost mid-fold, and a partition with
one GPU node and one without. Each test starts its own cluster (another base folder and port than the one-node
cluster of test_slurm_cluster.py) and ends by stopping it, leaving no process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import runs_lines
from ibsr_nnunet.nnunet.paths import fold_folder, trainer_name
from local_cluster import cli, copy_workspace, job_state, rows, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "local-cluster.sh"
BASE = "/tmp/ibsr-slurm-nodes"
PORT = "7817"
CPU_JOBS = ["--device", "cpu", "--gpus-per-job", "0", "--cpus-per-task", "1", "--signal-grace", "300"]


def processes_of(base: str) -> list[str]:
    """Every live process that belongs to the cluster at `base`: its daemons (started with its slurm.conf) and the
    processes of its jobs (their environment names its slurm.conf)."""
    conf = f"{base}/etc/slurm.conf"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if conf in cmdline or f"SLURM_CONF={conf}".encode() in environ:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def local_cluster(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture
def nodes(request):
    """A fresh cluster of the nodes and GPUs the test's `cluster_shape` marker gives (default 3 nodes, no GPUs);
    SLURM_CONF points at it while the test runs."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(t, path=path)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing)")
    marker = request.node.get_closest_marker("cluster_shape")
    count, gpus = marker.args if marker else (3, "0")
    env = {**os.environ, "PATH": path, "IBSR_SLURM_BASE": BASE, "IBSR_SLURM_PORT": PORT,
           "IBSR_SLURM_NODES": str(count), "IBSR_SLURM_CPUS": str(count), "IBSR_SLURM_GPUS": gpus,
           "IBSR_SLURM_CLEAN": "1"}
    local_cluster("stop", env=env)  # a cluster a killed test run left behind
    shutil.rmtree(BASE, ignore_errors=True)
    started = local_cluster("start", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = f"{BASE}/etc/slurm.conf"
    try:
        yield env
    finally:
        stopped = local_cluster("stop", env=env)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait_for(lambda: not processes_of(BASE), 30, "no process of the cluster left")


def test_a_cluster_of_three_nodes_comes_up_and_stops_by_its_pid_files(nodes):
    info = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T %c"], capture_output=True, text=True).stdout
    assert sorted(set(info.split("\n")) - {""}) == ["n1 idle 1", "n2 idle 1", "n3 idle 1"]
    status = local_cluster("status", env=nodes).stdout
    assert all(f"slurmd n{i}: running" in status for i in (1, 2, 3)), status
    refused = local_cluster("kill-node", "n9", env=nodes)
    assert refused.returncode == 1 and "no node n9 in this cluster (it has n1,n2,n3)" in refused.stderr


def test_array_tasks_spread_over_nodes_and_the_final_job_waits_for_all(nodes, planned, tmp_path):
    ws = copy_workspace(planned, tmp_path / "spread")
    submitted = cli(ws.root, "submit", "--configs", "2d,3d_fullres", "--folds", "0,1", "--epochs", "2",
                    "--iterations-per-epoch", "2", *CPU_JOBS)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    final = jobs[-1]["job_id"]
    wait_for(lambda: job_state(final).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 1500,
             "the final job to end", poll=2)
    assert job_state(final)["JobState"] == "COMPLETED", job_state(final)
    assert ws.leaderboard.is_file()
    trainer = trainer_name(2, 2)
    seen, ends = set(), []
    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            [start] = [line for line in runs_lines(fold_folder(ws, config, fold, trainer=trainer))
                       if line["event"] == "start"]
            seen.add(start["slurm_node"])
            task = job_state(f"{jobs[0 if config == '2d' else 1]['job_id']}_{fold}")
            ends.append(task["EndTime"])
    assert len(seen) >= 2 and seen <= {"n1", "n2", "n3"}, seen
    assert job_state(final)["StartTime"] >= max(ends)  # ISO times: the final job started after every fold ended
    table = rows(ws)
    assert all(table[("fold", c, f)]["finished"] for c in ("2d", "3d_fullres") for f in (0, 1))


def test_a_fold_whose_node_dies_resumes_on_another_node_at_its_last_checkpoint(nodes, planned, tmp_path):
    """... staging its own copy of the preprocessed data in the new node's scratch, never reading the dead one's."""
    ws = copy_workspace(planned, tmp_path / "loss")
    epochs = 12
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", "--epochs", str(epochs),
                    "--iterations-per-epoch", "4", "--stage-data", *CPU_JOBS)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    task = f"{jobs[0]['job_id']}_0"
    folder = fold_folder(ws, "2d", 0, trainer=trainer_name(epochs, 4))
    wait_for(lambda: (folder / "checkpoint_latest.pth").is_file(), 600, "the fold's first checkpoint", poll=0.5)
    [first] = [line for line in runs_lines(folder) if line["event"] == "start"]
    dead = first["slurm_node"]
    job_id = job_state(task)["JobId"]
    killed_at = time.time()
    killed = local_cluster("kill-node", dead, env=nodes)
    assert killed.returncode == 0 and f"killed node {dead}" in killed.stdout, killed.stdout + killed.stderr
    saved = _saved_epoch(folder)
    wait_for(lambda: not [p for p in processes_of(BASE) if (e := _environment(p.split(":")[0])).get(
        "SLURMD_NODENAME") == dead and e.get("SLURM_JOB_ID") == job_id], 10, "no process of the job left on the dead "
        "node")
    running = wait_for(lambda: (s := job_state(task)).get("JobState") == "RUNNING" and s.get("Restarts") == "1"
                       and s.get("NodeList") != dead and s, 300, "the fold to run again on another node", poll=1)
    requeued_at = time.time()
    wait_for(lambda: job_state(task).get("JobState") in ("COMPLETED", "FAILED"), 900, "the fold to end", poll=2)
    assert job_state(task)["JobState"] == "COMPLETED", job_state(task)
    lines = runs_lines(folder)
    starts = [line for line in lines if line["event"] == "start"]
    ends = {line["run"]: line for line in lines if line["event"] == "end"}
    assert len(starts) == 2 and ends[starts[0]["run"]]["reason"] == "killed"
    assert (starts[1]["slurm_node"], starts[1]["slurm_restart_count"]) == (running["NodeList"], 1)
    assert starts[1]["slurm_node"] != dead and starts[1]["epoch_start"] == saved
    assert starts[1]["epochs_redone"] <= 1
    log = next(ws.slurm.glob("logs/nnunet-2d_*_0.out")).read_text()
    assert "took over the lock" in log  # the dead run's lock, taken over at once (no heartbeat to age)
    staged = re.findall(r"staged the preprocessed data \(nnUNetPlans_2d\) on node-local disk at (\S+):", log)
    new = starts[1]["slurm_node"]
    assert [Path(p).relative_to(f"{BASE}/scratch").parts[0] for p in staged] == [dead, new], staged
    rerun = log[log.index(f"{BASE}/scratch/{new}"):]
    assert f"{BASE}/scratch/{dead}" not in rerun  # the rerun read its own node's copy only
    assert (folder / "checkpoint_final.pth").is_file()  # the results are in the shared workspace
    row = rows(ws)[("fold", "2d", 0)]
    assert row["restarts"] == 1 and row["nodes"] == [dead, starts[1]["slurm_node"]] and row["finished"]
    print(f"node loss: kill -> running again {requeued_at - killed_at:.0f} s")


def _saved_epoch(folder: Path) -> int:
    import torch

    state = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    return int(state["current_epoch"])


def _environment(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.cluster_shape(2, "1,0")
def test_a_partition_with_one_gpu_node_refuses_what_no_node_gives_and_places_gpu_jobs(nodes, planned, tmp_path):
    ws = copy_workspace(planned, tmp_path / "gpus")
    refused = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", "--gpus-per-job", "2", "--device", "cpu",
                  "--cpus-per-task", "1", "--dry-run")
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert "--gpus-per-job asks for 2 GPUs but the largest node of partition debug (n1) has 1" in said, said
    submitted = cli(ws.root, "submit", "--configs", "2d", "--folds", "0,1", "--epochs", "1",
                    "--iterations-per-epoch", "2", "--gpus-per-job", "1", "--device", "cpu", "--cpus-per-task", "1",
                    "--signal-grace", "300")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = json.loads((ws.slurm / "jobs.json").read_text())["jobs"]
    final = jobs[-1]["job_id"]
    wait_for(lambda: job_state(final).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 1200,
             "the final job to end", poll=2)
    assert job_state(final)["JobState"] == "COMPLETED", job_state(final)
    for fold in (0, 1):
        [start] = [line for line in runs_lines(fold_folder(ws, "2d", fold, trainer=trainer_name(1, 2)))
                   if line["event"] == "start"]
        assert start["slurm_node"] == "n1"  # the only node with a GPU
    assert re.search(r"^#SBATCH --gres=gpu:1$", Path(jobs[0]["script"]).read_text(), re.MULTILINE)


def test_two_campaigns_on_one_cluster_keep_to_their_own_jobs_and_records(nodes, planned, tmp_path):
    first, second = (copy_workspace(planned, tmp_path / name) for name in ("first", "second"))
    for ws in (first, second):
        done = cli(ws.root, "submit", "--configs", "2d", "--folds", "0", "--epochs", "1", "--iterations-per-epoch",
                   "2", *CPU_JOBS)
        assert done.returncode == 0, done.stdout + done.stderr
    ids = {ws: [r["job_id"] for r in json.loads((ws.slurm / "jobs.json").read_text())["jobs"]]
           for ws in (first, second)}
    assert not set(ids[first]) & set(ids[second])
    again = cli(first.root, "submit", "--configs", "2d", "--folds", "0", "--epochs", "1", "--iterations-per-epoch",
                "2", *CPU_JOBS)  # nothing new in the first: the second's jobs are not its business
    assert again.returncode == 0 and "cancelled" not in again.stdout
    for ws in (first, second):
        final = ids[ws][-1]
        wait_for(lambda: job_state(final).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 1200,
                 f"{ws.root.name}'s final job", poll=2)
        assert job_state(final)["JobState"] == "COMPLETED", job_state(final)
        assert ws.leaderboard.is_file()
        assert {r["job_id"] for r in json.loads((ws.slurm / "jobs.json").read_text())["jobs"]} == set(ids[ws])
        table = rows(ws)
        assert {r[2] for r in table} == {0, None} and {r["job_id"] for r in table.values()} <= {
            f"{ids[ws][0]}_0", ids[ws][-1]}
        [start] = [line for line in runs_lines(fold_folder(ws, "2d", 0, trainer=trainer_name(1, 2)))
                   if line["event"] == "start"]
        assert start["slurm_job_id"] not in {i for other in ids.values() if other is not ids[ws] for i in other}

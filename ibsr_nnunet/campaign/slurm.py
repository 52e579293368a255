"""The one door to SLURM's commands (scontrol, sbatch, scancel): argv lists, never through a shell.

Job state comes from the controller's memory (no accounting database needed): finished jobs stay there for
MinJobAge only.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Optional

from ..core.errors import InputError

# states in which a job still holds (or waits for) its place: submitting again must not duplicate it
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING",
                 "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"}
Runner = Callable[..., subprocess.CompletedProcess]


@dataclass
class JobState:
    job_id: str  # "12" or "12_3" for an array task
    state: str
    reason: str = ""
    restarts: int = 0
    exit_code: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _field(line: str, key: str) -> str:
    match = re.search(rf"(?:^|\s){key}=(\S*)", line)
    return match.group(1) if match else ""


def _task_ids(spec: str) -> list[int]:
    """'0-4%2' or '1,3-4' -> [0..4] / [1, 3, 4]."""
    ids: list[int] = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            ids.extend(range(int(lo), int(hi.split(":")[0]) + 1))
        elif part.isdigit():
            ids.append(int(part))
    return ids


def parse_show_job(text: str) -> dict[str, JobState]:
    """`scontrol -o show job` output -> states keyed by job id and, for array tasks, by 'ARRAYID_TASK'."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        job_id = _field(line, "JobId")
        if not job_id:
            continue
        restarts = _field(line, "Restarts")
        state = JobState(job_id, _field(line, "JobState"), _field(line, "Reason"),
                         int(restarts) if restarts.isdigit() else 0, _field(line, "ExitCode"))
        array_id, tasks = _field(line, "ArrayJobId"), _field(line, "ArrayTaskId")
        if array_id and tasks:
            for task in _task_ids(tasks):
                states[f"{array_id}_{task}"] = JobState(f"{array_id}_{task}", state.state, state.reason,
                                                        state.restarts, state.exit_code)
            states.setdefault(job_id, state)
        else:
            states[job_id] = state
    return states


def query_states(runner: Runner = subprocess.run) -> Optional[dict[str, JobState]]:
    """Every job the controller still knows (finished ones for MinJobAge); None when SLURM cannot be asked."""
    try:
        result = runner(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_show_job(result.stdout)


def sbatch(runner: Runner, argv: list[str]) -> str:
    """Submit one script; its job ID."""
    try:
        result = runner(argv, capture_output=True, text=True, timeout=120)
    except OSError as err:
        raise InputError(f"sbatch could not be started ({err}); run submit on a SLURM login node.") from None
    if result.returncode != 0:
        raise InputError(f"sbatch refused {argv[-1]}: {' '.join(result.stderr.split())}; "
                         f"fix the option it names (or --extra-sbatch / --config-file) and submit again.")
    return result.stdout.strip().split(";")[0]


def scancel(runner: Runner, job_id: str) -> None:
    runner(["scancel", job_id], capture_output=True, text=True, timeout=60)


@dataclass
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partitions: tuple[str, ...]


@dataclass
class Partition:
    name: str
    default: bool
    max_time: Optional[str]  # SLURM time, None for UNLIMITED/INFINITE


@dataclass
class Cluster:
    """What the controller says every node and partition can give: the limits no job can ever exceed."""

    partitions: dict[str, Partition]
    nodes: list[Node]

    def nodes_of(self, partition: str) -> list[Node]:
        return [n for n in self.nodes if partition in n.partitions]

    @property
    def default_partition(self) -> Optional[str]:
        return next((p.name for p in self.partitions.values() if p.default), None)


def _gpus(gres: str) -> int:
    """GPUs in a node's Gres, e.g. 'gpu:2', 'gpu:a100:4(S:0-1)' or 'gpu:2,shard:8' -> 2 / 4 / 2."""
    total = 0
    for entry in gres.split(","):
        parts = entry.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_cluster(partitions_text: str, nodes_text: str) -> Cluster:
    """`scontrol -o show partition` and `scontrol -o show node` output -> the cluster's limits."""
    partitions = {}
    for line in partitions_text.splitlines():
        if name := _field(line, "PartitionName"):
            max_time = _field(line, "MaxTime")
            partitions[name] = Partition(name, _field(line, "Default") == "YES",
                                         None if max_time in ("UNLIMITED", "INFINITE", "") else max_time)
    nodes = []
    for line in nodes_text.splitlines():
        if name := _field(line, "NodeName"):
            cpus, memory = _field(line, "CPUTot"), _field(line, "RealMemory")
            nodes.append(Node(name, int(cpus) if cpus.isdigit() else 0, int(memory) if memory.isdigit() else 0,
                              _gpus(_field(line, "Gres")), tuple(filter(None, _field(line, "Partitions").split(",")))))
    return Cluster(partitions, nodes)


def query_cluster(runner: Runner = subprocess.run) -> Optional[Cluster]:
    """The cluster's partitions and nodes; None when SLURM cannot be asked (no cluster here)."""
    texts = []
    for what in ("partition", "node"):
        try:
            result = runner(["scontrol", "-o", "show", what], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode != 0:
            return None
        texts.append(result.stdout)
    return parse_cluster(*texts)

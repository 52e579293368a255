"""submit's resource check against the cluster's nodes: what no node can ever give is refused in one sentence, what
a node can give passes, and no answer from SLURM is a note."""

from __future__ import annotations

import pytest

from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.campaign.slurm import parse_cluster
from ibsr_nnunet.campaign.submit import check_resources
from ibsr_nnunet.core.errors import InputError

PARTITIONS = (
    "PartitionName=gpu AllowGroups=ALL Default=YES MaxTime=2-00:00:00 Nodes=g[1-2] State=UP TotalCPUs=64\n"
    "PartitionName=cpu AllowGroups=ALL Default=NO MaxTime=UNLIMITED Nodes=c1 State=UP TotalCPUs=2\n")
NODES = (
    "NodeName=g1 Arch=x86_64 CPUTot=32 Gres=gpu:a100:4(S:0-1) RealMemory=256000 Partitions=gpu\n"
    "NodeName=g2 Arch=x86_64 CPUTot=16 Gres=gpu:2 RealMemory=128000 Partitions=gpu\n"
    "NodeName=c1 Arch=x86_64 CPUTot=2 Gres=(null) RealMemory=8000 Partitions=cpu\n")


@pytest.mark.parametrize("resources, message", [
    ({"cpus_per_task": 8, "partition": "cpu"}, "--cpus-per-task asks for 8 CPUs but the largest node of partition "
                                               "cpu (c1) has 2"),
    ({"gpus_per_job": 5}, "--gpus-per-job asks for 5 GPUs but the largest node of partition gpu (g1) has 4"),
    ({"mem": "300G"}, "--mem asks for 307200 MB of memory but the largest node of partition gpu (g1) has 256000"),
    ({"time": "3-00:00:00"}, "--time 3-00:00:00 is above partition gpu's MaxTime 2-00:00:00"),
    ({"partition": "a100"}, "--partition a100: the cluster has no such partition (it has gpu, cpu)"),
])
def test_submit_refuses_what_no_node_can_ever_give(resources, message):
    cluster = parse_cluster(PARTITIONS, NODES)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_resources(sbatch.resources_from(**resources), cluster, say=print)


def test_what_a_node_can_give_passes_and_no_cluster_is_a_note():
    cluster = parse_cluster(PARTITIONS, NODES)
    assert [(n.name, n.cpus, n.gpus, n.memory_mb) for n in cluster.nodes] == [
        ("g1", 32, 4, 256000), ("g2", 16, 2, 128000), ("c1", 2, 0, 8000)]
    check_resources(sbatch.resources_from(cpus_per_task=32, gpus_per_job=4, mem="250G", time="2-00:00:00"), cluster,
                    say=print)
    notes = []
    check_resources(sbatch.resources_from(cpus_per_task=99), None, say=notes.append)
    assert notes and "SLURM did not answer" in notes[0]

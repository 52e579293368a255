"""Typed, checked settings and names: --config-file values follow the options' rules, names match over the whole
string, submit refuses what no node can give, and bad files get one sentence instead of a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import invoke, said
from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.campaign.slurm import parse_cluster
from ibsr_nnunet.campaign.submit import check_resources
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.data.labels import value_counts

PARTITIONS = (
    "PartitionName=gpu AllowGroups=ALL Default=YES MaxTime=2-00:00:00 Nodes=g[1-2] State=UP TotalCPUs=64\n"
    "PartitionName=cpu AllowGroups=ALL Default=NO MaxTime=UNLIMITED Nodes=c1 State=UP TotalCPUs=2\n")
NODES = (
    "NodeName=g1 Arch=x86_64 CPUTot=32 Gres=gpu:a100:4(S:0-1) RealMemory=256000 Partitions=gpu\n"
    "NodeName=g2 Arch=x86_64 CPUTot=16 Gres=gpu:2 RealMemory=128000 Partitions=gpu\n"
    "NodeName=c1 Arch=x86_64 CPUTot=2 Gres=(null) RealMemory=8000 Partitions=cpu\n")


@pytest.mark.parametrize("toml, message", [
    ("gpus_per_job = 1.5", "gpus_per_job = 1.5 is refused; expected a whole number of GPUs"),
    ("cpus_per_task = true", "cpus_per_task = True is refused; expected a whole number of CPUs, 1 or more"),
    ("signal_grace = true", "signal_grace = True is refused; expected whole seconds, at least 60"),
    ('cpus_per_task = "eight"', "cpus_per_task = 'eight' is refused; expected a whole number of CPUs"),
    ("signal_grace = 30", "signal_grace = 30 is refused; expected whole seconds, at least 60"),
    ('gpu_option = "gpu"', "gpu_option = 'gpu' is refused; expected gres (--gres=gpu:N) or gpus (--gpus=N)"),
    ('time = "tomorrow"', "time = 'tomorrow' is refused; expected a SLURM time"),
    ('partition = "gpu\\n"', "partition = 'gpu\\n' is refused"),
    ("extra_sbatch = 3", "extra_sbatch = 3 is refused; expected a list of sbatch options"),
    ("seed = -1", "seed = -1 is refused; expected a whole number, 0 or more"),
    ('seed = "7"', "seed = '7' is refused; expected a whole number, 0 or more"),
])
def test_config_file_values_are_checked_by_type_and_range(tmp_path, toml, message):
    config = tmp_path / "slurm.toml"
    config.write_text(toml + "\n")
    with pytest.raises(InputError) as refused:
        sbatch.resources_from(config)
    assert str(refused.value).startswith(f"--config-file {config}: ") and message in str(refused.value)


@pytest.mark.parametrize("options, message", [
    ({"signal_grace": 59}, "--signal-grace: signal_grace = 59 is refused"),
    ({"cpus_per_task": 0}, "--cpus-per-task: cpus_per_task = 0 is refused"),
    ({"seed": -1}, "--seed: seed = -1 is refused"),
    ({"time": "00:10:00", "signal_grace": 600}, "--signal-grace 600 s is not less than --time 00:10:00 (600 s)"),
    ({"time": "5", "signal_grace": 600}, "--signal-grace 600 s is not less than --time 5 (300 s)"),
])
def test_options_follow_the_same_rules(options, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sbatch.resources_from(**options)


@pytest.mark.parametrize("text, seconds", [("90", 5400), ("10:30", 630), ("24:00:00", 86400), ("1-00", 86400),
                                           ("1-02:03", 93780), ("1-02:03:04", 93784), ("x", None), ("1:2:3:4", None)])
def test_slurm_times(text, seconds):
    assert sbatch.slurm_seconds(text) == seconds


def test_a_two_minute_slot_with_a_100_second_grace_is_accepted():
    resources = sbatch.resources_from(time="00:02:00", signal_grace=100)
    assert "#SBATCH --time=00:02:00" in resources.sbatch_lines()


@pytest.mark.parametrize("resources, message", [
    ({"cpus_per_task": 8, "partition": "cpu"}, "--cpus-per-task asks for 8 CPUs but the largest node of partition "
                                               "cpu has 2"),
    ({"gpus_per_job": 5}, "--gpus-per-job asks for 5 GPUs but the largest node of partition gpu has 4"),
    ({"mem": "300G"}, "--mem asks for 307200 MB of memory but the largest node of partition gpu has 256000"),
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


@pytest.mark.parametrize("args, valid", [
    (["submit", "--baselines", "foo__bar", "--dry-run"], "MODEL__LOSS with MODEL in unet2d"),
    (["submit", "--baselines", "unet2d__hinge", "--dry-run"], "LOSS in ce, dice, dice_ce"),
    (["submit", "--folds", "0,5", "--dry-run"], "'5' is not one of 0, 1, 2, 3, 4"),
    (["submit", "--configs", "2d,4d", "--dry-run"], "'4d' is not one of 2d, 3d_fullres, 3d_lowres"),
])
def test_submit_checks_each_name_against_its_registry(tmp_path, args, valid):
    result = invoke(tmp_path / "ws", *args)
    assert result.exit_code == 2 and valid in said(result), result.output


@pytest.mark.parametrize("dtype, low, high", [(np.int8, -100, 100), (np.int16, -30000, 30000), (np.uint16, 2, 65535),
                                              (np.int32, -(2 ** 31), 2 ** 31 - 1)])
def test_label_values_are_counted_in_any_integer_dtype_and_range(dtype, low, high):
    array = np.array([0, 0, 0, low, high, high, 1], dtype=dtype)
    assert value_counts(array) == dict(sorted({0: 3, low: 1, high: 2, 1: 1}.items()))

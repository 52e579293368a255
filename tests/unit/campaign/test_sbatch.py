"""campaign.sbatch rendering: golden files pin every generated script; bad resources are refused in one sentence
(the scripts run by bash: tests/workspace/test_sbatch.py).

Regenerate the golden files after a deliberate template change with IBSR_UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE
from sbatch_cases import CASES, CLI, CPU, WS

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_script_matches_golden_file(name):
    text = CASES[name]()
    golden = GOLDEN / name
    if os.environ.get("IBSR_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"missing {golden}: run with IBSR_UPDATE_GOLDEN=1 once"
    assert text == golden.read_text()
    assert text == CASES[name](), "rendering must be deterministic"
    assert not sbatch.PLACEHOLDER.search(text), "a placeholder was left unfilled"  # bash -n: tests/workspace


def test_training_scripts_carry_the_requeue_contract():
    for text in (CASES["nnunet-fold-3d_fullres-gpu.sbatch"](), CASES["baseline-unet2d__dice_ce-gpu.sbatch"]()):
        head = [line for line in text.splitlines() if line.startswith("#SBATCH")]
        for option in ("--requeue", "--open-mode=append", "--signal=B:USR1@600", "--gres=gpu:1", "--partition=gpu",
                       "--account=proj42", "--time=24:00:00", "--cpus-per-task=8", "--mem=32G", "--qos=long",
                       "--constraint=a100"):
            assert f"#SBATCH {option}" in head, option
        assert ("scontrol requeue" in text and "trap 'forward USR1' USR1" in text
                and f"EXIT_REQUEUE={EXIT_REQUEUE}" in text)
    cpu = CASES["nnunet-fold-2d-cpu.sbatch"]()
    assert "--gres" not in cpu and "--gpus" not in cpu and "#SBATCH --signal=B:USR1@300" in cpu
    final = CASES["final-gpu.sbatch"]()
    assert "--requeue" not in final and "--signal" not in final and "ensemble --trainer IbsrTrainer" in final
    gpus = sbatch.render_fold_array(WS, CLI, sbatch.Resources(gpus_per_job=2, gpu_option="gpus"), configuration="2d",
                                    epochs=1, iterations=1, device="cuda")
    assert "#SBATCH --gpus=2" in gpus and "--gres" not in gpus


@pytest.mark.parametrize("bad, message", [
    ({"partition": "gpu\n#SBATCH --x"}, r"--partition: partition = 'gpu\\n#SBATCH --x' is refused; expected a name"),
    ({"account": "a b"}, r"--account: account = 'a b' is refused; expected a name of letters"),
    ({"time": "$(id)"}, r"--time: time = '\$\(id\)' is refused; expected a SLURM time"),
    ({"mem": "1G;"}, r"--mem: mem = '1G;' is refused; expected a SLURM memory size such as 32G\."),
    ({"extra_sbatch": ["qos=long"]}, r"--extra-sbatch 'qos=long' is not one sbatch option; give it like --qos=long\."),
    ({"extra_sbatch": ["--qos=a\n--x"]}, r"--extra-sbatch '--qos=a\\n--x' is not one sbatch option"),
    ({"signal_grace": 0}, r"--signal-grace: signal_grace = 0 is refused; expected whole seconds, at least 60"),
    ({"gpus_per_job": -1}, r"--gpus-per-job: gpus_per_job = -1 is refused; expected a whole number of GPUs"),
])
def test_resources_reject_what_would_break_a_script(bad, message):
    with pytest.raises(InputError, match=f"^{message}"):
        sbatch.resources_from(**bad)


def test_a_configuration_that_is_not_a_name_is_refused():
    with pytest.raises(InputError, match=r"^configuration '2d; rm -rf /' may hold only letters, digits"):
        sbatch.render_fold_array(WS, CLI, CPU, configuration="2d; rm -rf /", epochs=1, iterations=1, device="cpu")


@pytest.mark.parametrize("value", ["24:00:00\n", " 24:00:00", "24:00:00 ", "24:00:00\r", "\t90", "1-00:00:00\x00"])
def test_a_time_with_blanks_or_control_characters_is_refused_not_written(value):
    with pytest.raises(InputError, match=re.escape(f"--time: time = {value!r} is refused; expected a SLURM time")):
        sbatch.resources_from(time=value)


def test_config_file_then_options(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('[slurm]\npartition = "a100"\naccount = "lab"\ngpus_per_job = 2\nsignal_grace = 900\n'
                      'extra_sbatch = ["--qos=long"]\n')
    resources = sbatch.resources_from(config, partition="h100", account=None, extra_sbatch=None)
    assert (resources.partition, resources.account, resources.gpus_per_job, resources.signal_grace) == (
        "h100", "lab", 2, 900)
    assert resources.extra_sbatch == ("--qos=long",)
    config.write_text('partiton = "typo"\n')
    with pytest.raises(InputError, match="partiton"):
        sbatch.resources_from(config)


def test_sbatch_argv_is_a_list_with_paths_as_single_arguments():
    argv = sbatch.sbatch_argv(Path("/w s/x.sbatch"), sbatch.log_pattern(Path("/w s/100%"), "f_%j.out"),
                              Path("/w s"), array=[0, 3], dependency=["12", "13_1"])
    assert argv == ["sbatch", "--parsable", "--output=/w s/100%%/f_%j.out", "--chdir=/w s", "--array=0,3",
                    "--dependency=afterok:12:13_1", "--kill-on-invalid-dep=yes", "/w s/x.sbatch"]


def test_max_restarts_is_recorded_in_every_training_script_with_50_by_default():
    assert "MAX_RESTARTS=20\n" in CASES["nnunet-fold-3d_fullres-gpu.sbatch"]()
    assert "MAX_RESTARTS=20\n" in CASES["baseline-unet2d__dice_ce-gpu.sbatch"]()
    assert "MAX_RESTARTS=50\n" in CASES["nnunet-fold-2d-cpu.sbatch"]() and sbatch.DEFAULT_MAX_RESTARTS == 50
    with pytest.raises(InputError, match="max_restarts"):
        sbatch.resources_from(max_restarts=-1)


def test_a_signal_grace_not_below_the_time_limit_is_refused():
    with pytest.raises(InputError, match="--signal-grace 120 s is not less than --time 2 \\(120 s\\)"):
        sbatch.resources_from(time="2", signal_grace=120)
    assert sbatch.resources_from(time="2", signal_grace=60).signal_grace == 60


def test_setup_lines_come_verbatim_right_after_the_sbatch_block_in_every_script():
    for name, render in CASES.items():
        lines = render().splitlines()
        last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
        setup = (["module load cuda/12.4"] if "staged" in name else
                 ["module load cuda/12.4", "source /opt/venv/bin/activate"] if "gpu" in name else [])
        assert lines[last_sbatch + 1:last_sbatch + 1 + len(setup)] == setup, name
        assert lines[last_sbatch + 1 + len(setup)] in ("set -u", "set -eu"), name
    with pytest.raises(InputError, match="holds a line break; give each shell line as its own --setup"):
        sbatch.resources_from(setup=["module load a\nrm -rf /"])


def test_setup_and_the_new_keys_from_a_config_file(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('setup = ["module load cuda/12.4", "source /v/bin/activate"]\nmax_restarts = 5\n'
                      'array_parallel = 2\nstage_data = true\nlocal_scratch = "/local"\n')
    r = sbatch.resources_from(config, setup=["module load extra"])
    assert (r.setup, r.max_restarts, r.array_parallel, r.stage_data, r.local_scratch) == (
        ("module load extra",), 5, 2, True, "/local")
    assert sbatch.resources_from(config).setup == ("module load cuda/12.4", "source /v/bin/activate")
    config.write_text('setup = "module load a\\nmodule load b"\n')
    with pytest.raises(InputError, match="no line may hold a newline"):
        sbatch.resources_from(config)
    config.write_text('local_scratch = "relative"\n')
    with pytest.raises(InputError, match="local_scratch"):
        sbatch.resources_from(config)


def test_array_parallel_throttles_the_array():
    argv = sbatch.sbatch_argv(Path("/w/x.sbatch"), "/w/l_%A_%a.out", Path("/w"), array=[0, 2, 4], array_parallel=2)
    assert "--array=0,2,4%2" in argv


def test_a_seed_is_passed_to_train_and_no_seed_adds_nothing(tmp_path):
    seeded = sbatch.resources_from(gpus_per_job=0, cpus_per_task=1, signal_grace=300, seed=3)
    text = sbatch.render_fold_array(WS, CLI, seeded, configuration="2d", epochs=3, iterations=2, device="cpu")
    assert "--iterations-per-epoch 2 --device cpu --seed 3\n" in text
    assert "--seed" not in CASES["nnunet-fold-2d-cpu.sbatch"]()
    config = tmp_path / "slurm.toml"
    config.write_text("seed = 5\n")
    assert sbatch.resources_from(config).seed == 5


def test_tracking_reaches_every_training_command_and_none_adds_nothing(tmp_path):
    tracked = sbatch.resources_from(gpus_per_job=0, cpus_per_task=1, signal_grace=300, seed=3, track="wandb",
                                    track_project="ibsr.cpu-runs")
    fold = sbatch.render_fold_array(WS, CLI, tracked, configuration="2d", epochs=3, iterations=2, device="cpu")
    assert ("--device cpu --seed 3 --track wandb --track-mode offline --track-project ibsr.cpu-runs\n" in fold)
    baseline = sbatch.render_baseline(WS, CLI, tracked, model="unet2d", loss="ce", epochs=2, iterations=5,
                                      device="cpu")
    train_line = next(line for line in baseline.splitlines() if "--iterations-per-epoch" in line)
    assert train_line.endswith("--device cpu --track wandb --track-mode offline --track-project ibsr.cpu-runs")
    assert "--track" not in baseline.split("baseline predict")[1]  # predicting logs nothing
    assert "--track" not in CASES["baseline-unet2d__dice_ce-gpu.sbatch"]() + CASES["nnunet-fold-2d-cpu.sbatch"]()
    config = tmp_path / "slurm.toml"
    config.write_text('track = "wandb"\ntrack_mode = "online"\n')
    assert sbatch.resources_from(config).tracking.options() == [
        "--track", "wandb", "--track-mode", "online", "--track-project", "ibsr-nnunet"]


@pytest.mark.parametrize("options, message", [
    ({"track": "mlflow"}, "--track: track = 'mlflow' is refused; expected wandb"),
    ({"track_mode": "online"}, "--track-mode and --track-project need --track wandb"),
    ({"track": "wandb", "track_project": "a b"}, "--track-project: track_project = 'a b' is refused"),
])
def test_bad_tracking_settings_are_refused(options, message):
    with pytest.raises(InputError, match=re.escape(message)):
        sbatch.resources_from(**options)


@pytest.mark.parametrize("fold, message", [
    (-1, r"^--fold -1 must be a whole number, 0 or more\.$"),
])
def test_a_fold_that_is_not_a_fold_number_is_refused(fold, message):
    with pytest.raises(InputError, match=message):
        sbatch.render_fold(WS, CLI, CPU, configuration="2d", fold=fold, epochs=1, iterations=1, device="cpu")


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

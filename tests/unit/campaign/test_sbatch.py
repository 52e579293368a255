"""sbatch rendering: golden files pin every generated script; hostile workspace paths never execute anything.

Regenerate the golden files after a deliberate template change with IBSR_UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE, EXIT_STALLED

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
WS = Path("/scratch/ibsr/ws")
CLI = ["/opt/venv/bin/python", "-m", "ibsr_nnunet"]
GPU = sbatch.resources_from(partition="gpu", account="proj42", time="24:00:00", gpus_per_job=1, cpus_per_task=8,
                            mem="32G", signal_grace=600, extra_sbatch=["--qos=long", "#SBATCH --constraint=a100"],
                            setup=["module load cuda/12.4", "source /opt/venv/bin/activate"], max_restarts=20)
GPU_STAGED = sbatch.resources_from(partition="gpu", time="1-00:00:00", gpus_per_job=1, setup=["module load cuda/12.4"],
                                   stage_data=True, local_scratch="/local scratch/ibsr")
CPU = sbatch.Resources(gpus_per_job=0, cpus_per_task=1, signal_grace=300)

CASES = {
    "nnunet-fold-3d_fullres-gpu.sbatch": lambda: sbatch.render_fold_array(
        WS, CLI, GPU, configuration="3d_fullres", epochs=1000, iterations=250, device="auto"),
    "nnunet-fold-2d-cpu.sbatch": lambda: sbatch.render_fold_array(
        WS, CLI, CPU, configuration="2d", epochs=3, iterations=2, device="cpu"),
    "nnunet-fold-3d_fullres-fold0-gpu-staged.sbatch": lambda: sbatch.render_fold(
        WS, CLI, GPU_STAGED, configuration="3d_fullres", fold=0, epochs=1000, iterations=250, device="cuda"),
    "nnunet-fold-2d-fold3-cpu.sbatch": lambda: sbatch.render_fold(
        WS, CLI, CPU, configuration="2d", fold=3, epochs=3, iterations=2, device="cpu"),
    "baseline-unet2d__dice_ce-gpu.sbatch": lambda: sbatch.render_baseline(
        WS, CLI, GPU, model="unet2d", loss="dice_ce", epochs=50, iterations=100, device="cuda"),
    "final-gpu.sbatch": lambda: sbatch.render_final(WS, CLI, GPU, trainer="IbsrTrainer", device="auto"),
    "final-cpu.sbatch": lambda: sbatch.render_final(WS, CLI, CPU, trainer="IbsrTrainer_3ep_2it", device="cpu"),
}


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
    assert not sbatch.PLACEHOLDER.search(text), "a placeholder was left unfilled"
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


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


HOSTILE = ["ws with space", "it's \"quoted\"", "$(touch CANARY)", "`touch CANARY`", "new\nline; touch CANARY",
           "${IFS}$((1+1))*?[a]", "-n"]


def fake_cli(folder: Path, record: Path, exit_code: int = 0) -> list[str]:
    """A stand-in for `python -m ibsr_nnunet` (its own path hostile too) that records its argv, one per line."""
    script = folder / "fake ibsr-nnunet $(touch CANARY)"
    script.write_text("#!/bin/bash\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> " + shlex.quote(str(record))
                      + f"\nprintf '\\n\\0' >> {shlex.quote(str(record))}\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


def calls(record: Path) -> list[list[str]]:
    parts = record.read_text().split("\0")
    out, current = [], []
    for part in parts:
        if part == "\n":
            out.append(current)
            current = []
        elif part:
            current.append(part)
    return out


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_workspace_paths_are_data_never_code(tmp_path, hostile):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    ws = tmp_path / hostile / "ws"
    record = tmp_path / "argv"
    cli = fake_cli(tmp_path, record)
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "1", "HOME": str(tmp_path)}
    scripts = {
        "fold": sbatch.render_fold_array(ws, cli, CPU, configuration="2d", epochs=3, iterations=2, device="cpu"),
        "baseline": sbatch.render_baseline(ws, cli, CPU, model="unet2d", loss="dice_ce", epochs=3, iterations=2,
                                           device="cpu"),
        "final": sbatch.render_final(ws, cli, CPU, trainer="IbsrTrainer_3ep_2it", device="cpu"),
    }
    for kind, text in scripts.items():
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
        script = tmp_path / f"{kind}.sbatch"
        script.write_text(text)
        result = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    assert not list(tmp_path.rglob("CANARY")) and not list(workdir.iterdir()), "a path was executed as code"
    seen = calls(record)
    assert [c[c.index("--workspace") + 1] for c in seen] == [str(ws)] * len(seen)
    assert seen[0][2:] == ["train", "--fold", "1", "--config", "2d", "--epochs", "3", "--iterations-per-epoch", "2",
                           "--device", "cpu"]
    assert [c[2:4] for c in seen[1:]] == [["baseline", "train"], ["baseline", "predict"], ["ensemble", "--trainer"],
                                          ["leaderboard"]]


def run_fold_script(tmp_path: Path, exit_code: int, resources: sbatch.Resources = CPU,
                    **env: str) -> subprocess.CompletedProcess:
    """The fold script with a fake train and a fake scontrol that logs what it was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/bash\necho \"$*\" >> {shlex.quote(str(tmp_path / 'scontrol.log'))}\n")
    scontrol.chmod(0o755)
    text = sbatch.render_fold_array(tmp_path / "ws", fake_cli(tmp_path, tmp_path / "argv", exit_code), resources,
                                    configuration="2d", epochs=3, iterations=2, device="cpu")
    (tmp_path / "fold.sbatch").write_text(text)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "42", **env}
    return subprocess.run(["bash", str(tmp_path / "fold.sbatch")], env=env, capture_output=True, text=True, timeout=60)


def test_exit_75_requeues_the_job_and_a_real_error_fails_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    requeued = run_fold_script(tmp_path / "a", EXIT_REQUEUE)
    assert requeued.returncode == 0, requeued.stdout + requeued.stderr
    assert (tmp_path / "a" / "scontrol.log").read_text() == "requeue 42\n"
    failed = run_fold_script(tmp_path / "b", 1)
    assert failed.returncode == 1 and "not requeued" in failed.stdout
    assert not (tmp_path / "b" / "scontrol.log").exists()


def test_a_stalled_step_fails_the_job_without_requeue_and_names_the_fix(tmp_path):
    stalled = run_fold_script(tmp_path, EXIT_STALLED)
    assert stalled.returncode == EXIT_STALLED, stalled.stdout + stalled.stderr
    assert "longer --time or a smaller --signal-grace" in stalled.stdout
    assert not (tmp_path / "scontrol.log").exists()


@pytest.mark.parametrize("signame", ["USR1", "TERM"])
def test_usr1_requeues_after_the_step_saves_and_term_leaves_it_to_slurm(tmp_path, signame):
    """The trap fires while `train` runs in the background and forwards the signal; the real exit code (75) is read
    after the trap. USR1 (the time-limit warning) -> `scontrol requeue`; TERM (scancel, scontrol requeue,
    preemption) -> no requeue of our own, which would undo a scancel."""
    import signal
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/bash\necho \"$*\" >> {shlex.quote(str(tmp_path / 'scontrol.log'))}\n")
    (bin_dir / "scontrol").chmod(0o755)
    trainer = tmp_path / "train.sh"
    trainer.write_text(f"#!/bin/bash\ntrap 'echo got-{signame} >> {shlex.quote(str(tmp_path / 'trainer.log'))}; "
                       "sleep 0.3; "
                       f"exit {EXIT_REQUEUE}' {signame}\ntouch {shlex.quote(str(tmp_path / 'started'))}\n"
                       "for i in $(seq 300); do sleep 0.1; done\nexit 0\n")
    trainer.chmod(0o755)
    text = sbatch.render_fold_array(tmp_path / "ws", [str(trainer)], CPU, configuration="2d", epochs=3, iterations=2,
                                    device="cpu")
    (tmp_path / "fold.sbatch").write_text(text)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "7"}
    process = subprocess.Popen(["bash", str(tmp_path / "fold.sbatch")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(getattr(signal, f"SIG{signame}"))
    output, _ = process.communicate(timeout=30)
    assert (tmp_path / "trainer.log").read_text() == f"got-{signame}\n"
    assert f"received SIG{signame}" in output
    if signame == "USR1":
        assert process.returncode == 0, output
        assert (tmp_path / "scontrol.log").read_text() == "requeue 7\n"
        assert f"exit code {EXIT_REQUEUE} after SIGUSR1: requeueing" in output
    else:
        assert process.returncode == EXIT_REQUEUE, output
        assert not (tmp_path / "scontrol.log").exists(), "a TERM (e.g. scancel) must not requeue the job"
        assert "left to SLURM" in output


def test_requeues_stop_after_max_restarts_and_the_job_fails_naming_why(tmp_path):
    """--max-restarts 3: the run after the 2nd restart still requeues; the run after the 3rd does not, says why,
    and exits non-zero (FAILED). A TERM-driven requeue is SLURM's and is not counted here."""
    three = sbatch.Resources(gpus_per_job=0, cpus_per_task=1, signal_grace=300, max_restarts=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    again = run_fold_script(tmp_path / "a", EXIT_REQUEUE, three, SLURM_RESTART_COUNT="2")
    assert again.returncode == 0 and (tmp_path / "a" / "scontrol.log").read_text() == "requeue 42\n", again.stdout
    last = run_fold_script(tmp_path / "b", EXIT_REQUEUE, three, SLURM_RESTART_COUNT="3")
    assert last.returncode == EXIT_REQUEUE, last.stdout + last.stderr
    assert not (tmp_path / "b" / "scontrol.log").exists()
    said = " ".join(last.stdout.split())
    assert "was requeued 3 times already (--max-restarts 3): not requeued, the job fails" in said
    assert "longer --time or a smaller --signal-grace" in said


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


def test_the_hand_script_embeds_its_fold_records_itself_first_and_passes_staging_on(tmp_path):
    """Run as sbatch would (no array variables): register-job first, then train with the embedded fold."""
    record = tmp_path / "argv"
    staged = sbatch.Resources(gpus_per_job=0, cpus_per_task=1, signal_grace=300, stage_data=True,
                              local_scratch="/node local/$(touch CANARY)")
    text = sbatch.render_fold(tmp_path / "ws", fake_cli(tmp_path, record), staged, configuration="3d_fullres", fold=2,
                              epochs=3, iterations=2, device="cpu")
    assert "--array" not in text and "SLURM_ARRAY_TASK_ID:?" not in text and "FOLD=2\n" in text
    assert not any(line.startswith("#SBATCH --output") for line in text.splitlines())
    (tmp_path / "fold2.sbatch").write_text(text)
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "77", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(tmp_path / "fold2.sbatch")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = calls(record)
    assert [c[2:] for c in seen] == [
        ["register-job", "--config", "3d_fullres", "--fold", "2", "--epochs", "3", "--iterations-per-epoch", "2"],
        ["train", "--fold", "2", "--config", "3d_fullres", "--epochs", "3", "--iterations-per-epoch", "2", "--device",
         "cpu", "--stage-data", "--local-scratch", "/node local/$(touch CANARY)"]]
    assert not list(tmp_path.rglob("CANARY"))
    with pytest.raises(InputError):
        sbatch.render_fold(WS, CLI, CPU, configuration="2d", fold=-1, epochs=1, iterations=1, device="cpu")


def test_a_seed_is_passed_to_train_and_no_seed_adds_nothing(tmp_path):
    seeded = sbatch.resources_from(gpus_per_job=0, cpus_per_task=1, signal_grace=300, seed=3)
    text = sbatch.render_fold_array(WS, CLI, seeded, configuration="2d", epochs=3, iterations=2, device="cpu")
    assert "--iterations-per-epoch 2 --device cpu --seed 3\n" in text
    assert "--seed" not in CASES["nnunet-fold-2d-cpu.sbatch"]()
    config = tmp_path / "slurm.toml"
    config.write_text("seed = 5\n")
    assert sbatch.resources_from(config).seed == 5

"""Rendered sbatch scripts run by bash: every golden case is valid bash, hostile workspace paths stay data, exit 75
and USR1 requeue, a stall or too many restarts fail the job, the hand script records itself."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from ibsr_nnunet.campaign import sbatch
from ibsr_nnunet.core.exitcodes import EXIT_REQUEUE, EXIT_STALLED
from sbatch_cases import CASES

CPU = sbatch.Resources(gpus_per_job=0, cpus_per_task=1, signal_grace=300)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_rendered_script_is_valid_bash(name):
    subprocess.run(["bash", "-n"], input=CASES[name](), text=True, check=True)


HOSTILE = ["ws with space", "it's \"quoted\"", "$(touch CANARY)", "`touch CANARY`", "new\nline; touch CANARY",
           "${IFS}$((1+1))*?[a]", "-n"]


def fake_cli(folder: Path, argv_log: Path, exit_code: int = 0) -> list[str]:
    """A stand-in for `python -m ibsr_nnunet` (its own path hostile too) that records its argv, one per line."""
    script = folder / "fake ibsr-nnunet $(touch CANARY)"
    script.write_text("#!/bin/bash\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> " + shlex.quote(str(argv_log))
                      + f"\nprintf '\\n\\0' >> {shlex.quote(str(argv_log))}\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


def calls(argv_log: Path) -> list[list[str]]:
    parts = argv_log.read_text().split("\0")
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
    argv_log = tmp_path / "argv"
    cli = fake_cli(tmp_path, argv_log)
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
    seen = calls(argv_log)
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


def test_the_hand_script_embeds_its_fold_records_itself_first_and_passes_staging_on(tmp_path):
    """Run as sbatch would (no array variables): register-job first, then train with the embedded fold."""
    argv_log = tmp_path / "argv"
    staged = sbatch.Resources(gpus_per_job=0, cpus_per_task=1, signal_grace=300, stage_data=True,
                              local_scratch="/node local/$(touch CANARY)")
    text = sbatch.render_fold(tmp_path / "ws", fake_cli(tmp_path, argv_log), staged, configuration="3d_fullres", fold=2,
                              epochs=3, iterations=2, device="cpu")
    assert "--array" not in text and "SLURM_ARRAY_TASK_ID:?" not in text and "FOLD=2\n" in text
    assert not any(line.startswith("#SBATCH --output") for line in text.splitlines())
    (tmp_path / "fold2.sbatch").write_text(text)
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "77", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(tmp_path / "fold2.sbatch")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = calls(argv_log)
    assert [c[2:] for c in seen] == [
        ["register-job", "--config", "3d_fullres", "--fold", "2", "--epochs", "3", "--iterations-per-epoch", "2"],
        ["train", "--fold", "2", "--config", "3d_fullres", "--epochs", "3", "--iterations-per-epoch", "2", "--device",
         "cpu", "--stage-data", "--local-scratch", "/node local/$(touch CANARY)"]]
    assert not list(tmp_path.rglob("CANARY"))

"""The wheel built from the repository carries every template and script the CLI reads, and renders from them."""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ibsr_nnunet

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SHIPPED = ("nnunet-fold.sbatch", "baseline.sbatch", "final.sbatch", "step.bash", "local-cluster.sh")
GOLDEN_CLI = "/opt/venv/bin/python -m ibsr_nnunet"
GOLDEN_WS = "/scratch/ibsr/ws"


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a copy of the tracked files (the checkout stays clean), unpacked."""
    root = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    source = root / "source"
    for name in filter(None, tracked.stdout.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, text=True)
    [wheel] = (root / "dist").glob("ibsr_nnunet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root / "unpacked")
    return root / "unpacked"


def test_wheel_carries_every_template_and_script(unpacked_wheel):
    templates = unpacked_wheel / "ibsr_nnunet" / "campaign" / "templates"
    for name in SHIPPED:
        assert (templates / name).read_bytes() == (REPO / "slurm" / name).read_bytes(), name
    for package in ("core", "data", "nnunet", "nnunet/ext_trainers", "campaign", "evaluation", "cli"):
        assert (unpacked_wheel / "ibsr_nnunet" / package / "__init__.py").is_file(), package
    assert (unpacked_wheel / "baselines" / "registry.py").is_file()


def test_each_template_exists_once_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in SHIPPED:
        assert [p for p in tracked if Path(p).name == name] == [f"slurm/{name}"], name


def _dry_run_scripts(output: str) -> dict[str, str]:
    """The scripts `submit --dry-run` prints, by the kind in their '# ===== KIND NAME: path =====' header."""
    scripts, current = {}, None
    for line in output.splitlines(keepends=True):
        if line.startswith("# ===== sbatch command line"):
            current = None
        elif line.startswith("# ===== "):
            current = line.split()[2]
            scripts[current] = ""
        elif current:
            scripts[current] += line
    return scripts


def test_submit_dry_run_from_the_unpacked_wheel_matches_the_golden_files(unpacked_wheel, tmp_path):
    ws = tmp_path / "ws"
    planned = ws / "nnUNet_preprocessed" / "Dataset501_IBSR18"
    planned.mkdir(parents=True)
    (planned / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}, "3d_fullres": {}}}))
    (planned / "splits_final.json").write_text(json.dumps([{"train": [], "val": []}] * 5))
    raw = ws / "nnUNet_raw" / "Dataset501_IBSR18"
    raw.mkdir(parents=True)
    (raw / "ibsr_manifest.json").write_text(json.dumps({"fingerprint": "f" * 64}))
    args = ["--workspace", str(ws), "submit", "--configs", "2d", "--folds", "0", "--epochs", "3",
            "--iterations-per-epoch", "2", "--device", "cpu", "--gpus-per-job", "0", "--cpus-per-task", "1",
            "--signal-grace", "300", "--dry-run"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(unpacked_wheel), "COLUMNS": "200"}
    where = subprocess.run([sys.executable, "-c", "import ibsr_nnunet; print(ibsr_nnunet.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(unpacked_wheel), where.stdout
    done = subprocess.run([sys.executable, "-m", "ibsr_nnunet", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    scripts = _dry_run_scripts(done.stdout)
    assert sorted(scripts) == ["final", "fold"], done.stdout
    cli = f"{Path(sys.executable).absolute()} -m ibsr_nnunet"
    for kind, golden in (("fold", "nnunet-fold-2d-cpu.sbatch"), ("final", "final-cpu.sbatch")):
        text = scripts[kind].replace(cli, GOLDEN_CLI).replace(str(ws), GOLDEN_WS)
        assert text == (GOLDEN / golden).read_text(), kind


def test_editable_install_reads_the_checkouts_slurm_folder():
    if not Path(ibsr_nnunet.__file__).resolve().is_relative_to(REPO):
        pytest.skip("ibsr_nnunet is not imported from this checkout (not an editable install)")
    templates = importlib.resources.files("ibsr_nnunet.campaign.templates")
    assert Path(str(templates)).resolve() == REPO / "slurm"
    assert (templates / "nnunet-fold.sbatch").read_text() == (REPO / "slurm" / "nnunet-fold.sbatch").read_text()

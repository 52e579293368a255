"""Fixtures of the integration tier: a running local SLURM cluster (slurm/local-cluster.sh) and the planned phantom
workspace its tests copy."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "slurm" / "local-cluster.sh"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A running local cluster: started here unless one already runs, stopped at the end if started here."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol")
               if not shutil.which(tool, path=path)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): "
                    f"apt-get install slurmctld slurmd slurm-client munge")
    base = os.environ.get("IBSR_SLURM_BASE", "/tmp/ibsr-slurm-local")
    conf = f"{base}/etc/slurm.conf"
    already = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True).stdout
    started = "slurmctld: running" not in already
    result = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if started:
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="module")
def planned(planned_ws) -> Path:
    """The session's planned seed-0 phantom workspace (2d + 3d_fullres); each test works in its own copy."""
    return planned_ws.root

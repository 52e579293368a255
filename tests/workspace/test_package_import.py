"""Importing the package, in a fresh interpreter, changes nothing in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_importing_the_package_changes_nothing_in_the_environment():
    """Every module imported in a fresh interpreter: os.environ before == after (prepare_process is for main())."""
    code = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import ibsr_nnunet, ibsr_nnunet.cli, ibsr_nnunet.segment, ibsr_nnunet.demo, ibsr_nnunet.models\n"
        "import ibsr_nnunet.nnunet.environment, ibsr_nnunet.nnunet.train, ibsr_nnunet.nnunet.ensemble\n"
        "import ibsr_nnunet.evaluation.leaderboard, ibsr_nnunet.evaluation.figures, ibsr_nnunet.campaign.submit\n"
        "import baselines.train, baselines.infer\n"
        "after = dict(os.environ)\n"
        "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
        " if before.get(k) != after.get(k)}))\n")
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("nnUNet_") or k in ("OMP_WAIT_POLICY", "MPLBACKEND"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}

"""The tiers (each test's marker, from its folder) and the fixtures (helpers are in helpers.py): the real IBSR18
volumes beside the checkout, phantom trees, and the shared phantom workspaces built once per session — converted,
and converted + planned by real nnU-Net — with per-test copies for tests that change them."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import SHARED_IBSR18, copy_workspace, restored_environ, watched_env
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.data.phantom import write_phantoms

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "workspace", "integration")  # tests/<tier>/... carries that marker
SCENARIOS = "scenarios"  # cross-cutting tests: each marks its own tier


# ---- the tiers --------------------------------------------------------------------------------------------------

def tier_problem(item: pytest.Item) -> str | None:
    """Sets the tier marker of a test in a tier folder; says what is wrong when a test has no tier, or two."""
    folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
    marked = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
    if folder in TIERS:
        if marked and marked != [folder]:
            return f"is in tests/{folder}/ but marked {', '.join(marked)}: move it to the folder of its tier"
        item.add_marker(folder)
        return None
    if folder == SCENARIOS:
        if len(marked) != 1:
            return (f"is a scenario marked {', '.join(marked) or 'with no tier'}: mark it with exactly one of "
                    f"@pytest.mark.workspace or @pytest.mark.integration")
        return None
    return f"is outside the tier folders: move it under tests/{{{','.join(TIERS)},{SCENARIOS}}}/"


def worker_group(item: pytest.Item) -> str:
    """The pytest-xdist group of a test (`-n 2 --dist loadgroup`): the tests of the one local SLURM cluster share a
    worker, the others go with their file, so each module fixture is built once."""
    if "cluster" in getattr(item, "fixturenames", ()):
        return "local-slurm-cluster"
    return Path(item.path).resolve().relative_to(TESTS).as_posix()


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the markers set here
def pytest_collection_modifyitems(config, items):
    problems = [f"{item.nodeid} {problem}" for item in items if (problem := tier_problem(item))]
    if problems:
        raise pytest.UsageError("every test carries exactly one tier:\n" + "\n".join(problems))
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            item.add_marker(pytest.mark.xdist_group(worker_group(item)))


@pytest.fixture(autouse=True)
def no_leaked_environment(request):
    """Fails the test that leaves nnU-Net's variables (or OMP_WAIT_POLICY/MPLBACKEND) other than it found them."""
    before = watched_env()
    yield
    after = watched_env()
    if after != before:
        os.environ.update(before)  # put things back so the next tests start clean
        for key in set(after) - set(before):
            del os.environ[key]
        changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
        pytest.fail(f"{request.node.nodeid} leaked environment variables (before, after): {changed}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def environment_unchanged_by_the_session():
    """The whole run (session fixtures included) leaves the watched variables as it found them."""
    before = watched_env()
    yield
    assert watched_env() == before, "the test session leaked nnUNet_*/OMP_WAIT_POLICY/MPLBACKEND variables"


# ---- the real data ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def shared_ibsr18() -> Path:
    if not SHARED_IBSR18.is_dir():
        pytest.skip(f"the real IBSR18 data is not beside the checkout at {SHARED_IBSR18}")
    return SHARED_IBSR18


@pytest.fixture(scope="session")
def shared_manifest(shared_ibsr18) -> dict[str, dict]:
    """MANIFEST.txt rows by file: shape, spacing and label counts, as measured when the data was laid out."""
    rows = {}
    for line in (shared_ibsr18 / "MANIFEST.txt").read_text().splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 7 and parts[0].endswith(".nii.gz"):
            counts = dict(re.findall(r"(\d+):(\d+)", parts[6])) if parts[6].startswith("labels") else {}
            rows[parts[0]] = {"sha256": parts[1], "counts": {int(k): int(v) for k, v in counts.items()}}
    return rows


# ---- phantoms and the shared workspaces -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """8 small phantom subjects (seed 0) in each layout (MISA: 5 train, 2 validation, 1 test)."""
    root = tmp_path_factory.mktemp("phantoms")
    for layout in ("misa", "nitrc", "analyze"):
        write_phantoms(root / layout, subjects=8, layout=layout, size="small", seed=0)
    return root


@pytest.fixture
def misa_copy(phantom_root, tmp_path) -> Path:
    """A writable copy of the MISA phantom tree, for tests that break it."""
    return Path(shutil.copytree(phantom_root / "misa", tmp_path / "source"))


@pytest.fixture(scope="session")
def converted_ws(phantom_root, tmp_path_factory) -> Workspace:
    """phantom (misa, 8 subjects, seed 0) -> convert: 5 train, 2 held-out (IBSR_06, IBSR_07), 1 test (IBSR_08) case
    of 64×32×64 voxels. Shared by the session: read it, never change it (use `converted_copy`)."""
    from ibsr_nnunet.data.convert import ConvertOptions, convert

    ws = Workspace.open(tmp_path_factory.mktemp("converted") / "ws")
    convert(phantom_root / "misa", ws, ConvertOptions(jobs=2))
    return ws


@pytest.fixture(scope="session")
def planned_ws(converted_ws, tmp_path_factory) -> Workspace:
    """`converted_ws` -> nnU-Net plan (2d and 3d_fullres, real fingerprint/plans/preprocessing). Shared by the
    session: read it, never change it (use `planned_copy`)."""
    from ibsr_nnunet.nnunet.environment import configure
    from ibsr_nnunet.nnunet.plan import plan

    ws = copy_workspace(converted_ws, tmp_path_factory.mktemp("planned") / "ws")
    with restored_environ():
        configure(ws, 2)
        [result] = plan(ws, jobs=2)
    assert {"2d", "3d_fullres"} <= set(result.configurations) and not result.up_to_date
    return ws


@pytest.fixture(scope="session")
def trained_baseline_ws(converted_ws, tmp_path_factory) -> Workspace:
    """`converted_ws` with a unet2d__dice_ce trained on the CPU for 2 epochs of 10 iterations (width 4, 32² patches,
    batches of 2): a finished baseline in seconds. Shared by the session: read it, never change it (copy it)."""
    from helpers import trained_phantom_baseline

    return trained_phantom_baseline(converted_ws, tmp_path_factory.mktemp("baseline") / "ws", epochs=2,
                                    iterations=10, width=4, batch_size=2)


@pytest.fixture
def converted_copy(converted_ws, tmp_path) -> Workspace:
    """A writable copy of `converted_ws`."""
    return copy_workspace(converted_ws, tmp_path / "ws")


@pytest.fixture
def planned_copy(planned_ws, tmp_path) -> Workspace:
    """A writable copy of `planned_ws`."""
    return copy_workspace(planned_ws, tmp_path / "ws")

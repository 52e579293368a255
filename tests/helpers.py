"""Helpers shared by the test modules (fixtures live in conftest.py): the command line in-process and in a
subprocess, interrupt-and-wait, workspace copies, NIfTI save/load, the segment output check and finished-looking
nnU-Net folds."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

import nibabel as nib
import numpy as np
import pytest

from ibsr_nnunet.core import provenance
from ibsr_nnunet.core.workspace import Workspace

SHARED_IBSR18 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibsr18"
CLI = [sys.executable, "-m", "ibsr_nnunet"]
BOX = "".join(map(chr, range(0x2500, 0x2580)))  # box drawing: rich's panel and table borders


# ---- the command line -------------------------------------------------------------------------------------------

def invoke(workspace: Union[Path, Workspace, None], *args: str, env: Optional[dict] = None):
    """`ibsr-nnunet [--workspace WS] ARGS...` in-process (typer's CliRunner); the click Result. os.environ is
    restored afterwards."""
    from typer.testing import CliRunner

    from ibsr_nnunet.cli import app

    root = workspace.root if isinstance(workspace, Workspace) else workspace
    prefix = ["--workspace", str(root)] if root is not None else []
    with restored_environ():  # plan/train/ensemble export nnU-Net's variables, as a process would at its entry
        return CliRunner().invoke(app, [*prefix, *map(str, args)], env=env)


BASELINE = "unet2d__dice_ce"  # the model of the session's trained_baseline_ws


def trained_phantom_baseline(source: Workspace, target: Path, *, epochs: int, iterations: int, width: int,
                             batch_size: int) -> Workspace:
    """A copy of the converted phantom workspace `source` at `target`, with unet2d__dice_ce trained on the CPU (32²
    patches) for `epochs` × `iterations`."""
    ws = copy_workspace(source, target)
    result = invoke(ws, "baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", str(epochs),
                    "--iterations-per-epoch", str(iterations), "--width", str(width), "--patch-size", "32",
                    "--batch-size", str(batch_size), "--device", "cpu")
    assert result.exit_code == 0, result.output
    return ws


def segment_with_baseline(ws: Union[Path, Workspace], *args: str):
    """`ibsr-nnunet segment ARGS... --model unet2d__dice_ce --device cpu` in-process, with the session's baseline."""
    return invoke(ws, "segment", *args, "--model", BASELINE, "--device", "cpu")


def said(result) -> str:
    """A Result's output with rich's box characters folded away and its line wrapping undone."""
    text = result.output
    for char in BOX:
        text = text.replace(char, " ")
    return " ".join(text.split())


def cli(ws: Union[Path, Workspace], *args: str, timeout: int = 600, columns: int = 200,
        env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """`python -m ibsr_nnunet --workspace WS ARGS...` in a subprocess (nnU-Net's pools need a __main__ guard)."""
    root = ws.root if isinstance(ws, Workspace) else ws
    return subprocess.run([*CLI, "--workspace", str(root), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": str(columns), **(env or {})})


def console_script(name: str) -> str:
    """An installed console script (nnUNetv2_train, ...) next to the running interpreter, not whatever PATH finds."""
    return str(Path(sys.executable).parent / name)


def interrupt_when(argv: list[str], ready: Union[Path, Callable[[], bool]], signum: int = signal.SIGUSR1, *,
                   timeout: float = 300, wait: float = 120, poll: float = 0.05,
                   env: Optional[dict] = None) -> tuple[int, str]:
    """Start `argv`, send `signum` once `ready` (a file that appears, or a predicate) holds, wait for the exit:
    (exit code, stdout + stderr)."""
    check = ready.exists if isinstance(ready, Path) else ready
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200", **(env or {})})
    try:
        deadline = time.time() + timeout
        while not check() and time.time() < deadline and process.poll() is None:
            time.sleep(poll)
        if not check():
            process.kill()
            output, _ = process.communicate(timeout=60)
            pytest.fail(f"never ready ({ready}) before the signal; output:\n{output[-3000:]}")
        process.send_signal(signum)
        output, _ = process.communicate(timeout=wait)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, output


# ---- the environment ------------------------------------------------------------------------------------------

# variables a test run must leave as it found them: nnU-Net's (Workspace.export_env, nnunet.environment.configure)
# and those prepare_process sets at process entry
WATCHED_ENV = re.compile(r"^(nnUNet_\w+|OMP_WAIT_POLICY|MPLBACKEND)$")


def watched_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if WATCHED_ENV.match(k)}


class restored_environ:
    """Within the block os.environ may change (export_env, configure, an in-process command); afterwards it is
    exactly as before."""

    def __enter__(self):
        self.saved = dict(os.environ)
        return self

    def __exit__(self, *exc):
        for key in set(os.environ) - set(self.saved):
            del os.environ[key]
        os.environ.update(self.saved)


# ---- workspaces -------------------------------------------------------------------------------------------------

def copy_workspace(source: Union[Path, Workspace], target: Path) -> Workspace:
    """A writable copy of a workspace (its dataset ID comes along in workspace.json)."""
    root = source.root if isinstance(source, Workspace) else source
    shutil.copytree(root, target, symlinks=True)
    return Workspace.open(target)


# ---- NIfTI ------------------------------------------------------------------------------------------------------

def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def check_segment_outputs(inputs: dict[str, Path], out: Path, model: str):
    """Every `segment` output on its input's grid, labels in {0..3}, and the CSV's mL equal to voxel counts × voxel
    volume; the volumes table indexed by input."""
    import pandas as pd

    table = pd.read_csv(out / "volumes.csv").set_index("input")
    for name, source in inputs.items():
        written = nib.load(out / name)
        image = nib.load(source)
        labels = np.asarray(written.dataobj)
        assert labels.shape == image.shape[:3]
        np.testing.assert_allclose(written.affine, image.affine, atol=1e-5)
        assert written.get_data_dtype() == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3}
        row = table.loc[str(source)]
        voxel_ml = float(np.prod(np.array(written.header.get_zooms()[:3], dtype=float))) / 1000
        for label, tissue in ((1, "CSF"), (2, "GM"), (3, "WM")):
            assert row[f"{tissue}_ml"] == pytest.approx((labels == label).sum() * voxel_ml, rel=1e-9)
        total = sum((labels == k).sum() for k in (1, 2, 3)) * voxel_ml
        assert row["total_ml"] == pytest.approx(total, rel=1e-9) and total > 0
        assert row["BPF"] == pytest.approx(((labels == 2).sum() + (labels == 3).sum()) * voxel_ml / total, rel=1e-9)
        assert row["model"] == model and row["output"] == str(out / name)
    return table


# ---- orientation ------------------------------------------------------------------------------------------------

ORIENTATIONS = [((0, 1, 2), (0,)), ((2, 0, 1), (1,)), ((1, 2, 0), (0, 2))]  # (permutation, flipped new axes)


def reoriented_copy(source: Path, target: Path, perm: tuple[int, int, int], flips: tuple[int, ...]) -> Path:
    """The same voxels stored with their axes permuted and flipped, the affine changed so that every voxel stays at
    its place in the world (../shared/notes/orientation.md)."""
    image = nib.load(str(source))
    data = np.asanyarray(image.dataobj)
    data = data.reshape(data.shape[:3])
    affine = image.affine[:, list(perm) + [3]].copy()
    data = np.transpose(data, perm)
    for axis in flips:
        affine[:, 3] += affine[:, axis] * (data.shape[axis] - 1)
        affine[:, axis] = -affine[:, axis]
        data = np.flip(data, axis)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(target))
    return target


def carried_back(array: np.ndarray, perm: tuple[int, int, int], flips: tuple[int, ...]) -> np.ndarray:
    """A map on a `reoriented_copy`'s grid, undone to the source's array axes."""
    for axis in flips:
        array = np.flip(array, axis)
    return np.transpose(array, np.argsort(perm))


# ---- nnU-Net folds ----------------------------------------------------------------------------------------------

def fake_fold(ws: Workspace, trainer: str, config: str, fold: int, plans: str = "nnUNetPlans") -> None:
    """The files of a finished fold (empty), recorded as trained on the workspace's dataset."""
    folder = ws.results_dataset / f"{trainer}__{plans}__{config}" / f"fold_{fold}"
    (folder / "validation").mkdir(parents=True)
    for name in ("checkpoint_final.pth", "validation/summary.json", "validation/IBSR_01.npz"):
        (folder / name).write_bytes(b"")
    provenance.write_provenance(folder, provenance.dataset_fingerprint(ws))  # trained on this workspace's dataset


def write_holder(path: Path, holder) -> None:
    """A lock file as another process leaves it (holder: a core.locks.Holder); its mtime is the heartbeat."""
    path.write_bytes(holder.lock_file_bytes())
    os.utime(path, (holder.heartbeat, holder.heartbeat))


def runs_lines(folder: Path) -> list[dict]:
    """The folder's runs.jsonl, one dict a line."""
    from ibsr_nnunet.core.runlog import RUNS_FILE

    return [json.loads(line) for line in (Path(folder) / RUNS_FILE).read_text().splitlines()]


def wandb_offline_runs(folder: Path) -> list[tuple[str, list[dict]]]:
    """Each offline W&B run file under folder/wandb/ in the order written: (its run id, its history rows). The file is
    W&B's record log (LevelDB's log format: 32 KiB blocks of checksummed chunks, each chunk a piece of one protobuf
    Record); W&B 0.19+ ships no reader for it in Python."""
    import struct

    from wandb.proto import wandb_internal_pb2

    block, found = 32768, []
    for path in sorted(Path(folder).glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B", f"{path} is not a W&B run file"
        position, pending, rows, run_id = 7, b"", [], None
        while position + 7 <= len(data):
            if block - position % block < 7:  # a block's tail too short for a chunk header is padding
                position += block - position % block
                continue
            _, length, kind = struct.unpack("<IHB", data[position:position + 7])
            chunk, position = data[position + 7:position + 7 + length], position + 7 + length
            if kind == 0:
                break
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind not in (1, 4):  # FIRST and MIDDLE pieces wait for the LAST
                continue
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            which = record.WhichOneof("record_type")
            if which == "run":
                run_id = record.run.run_id
            elif which == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
        found.append((run_id, rows))
    return found

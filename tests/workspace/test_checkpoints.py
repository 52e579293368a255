"""Baseline checkpoints are data, never code: loaded with weights_only, and a crafted, old-format or corrupt
`best.pt` / `checkpoint.pt` is refused in one sentence naming the file, before anything in it can run."""

import pathlib
import pickle
from pathlib import Path

import pytest
import torch

from baselines.options import TrainOptions
from baselines.run_folder import CHECKPOINT
from helpers import copy_workspace, invoke, said
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace


def train(epochs: int) -> list[str]:
    return ["baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--epochs", str(epochs),
            "--iterations-per-epoch", "3", "--width", "4", "--patch-size", "32", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(converted_ws, tmp_path_factory) -> Workspace:
    """A copy of the session's converted phantom workspace with a unet2d__dice_ce trained for 3 iterations."""
    ws = copy_workspace(converted_ws, tmp_path_factory.mktemp("checkpoints") / "ws")
    result = invoke(ws, *train(1))
    assert result.exit_code == 0, result.output
    return ws


@pytest.fixture
def ws(trained, tmp_path) -> Workspace:
    return copy_workspace(trained, tmp_path / "ws")


class Touch:
    """Unpickled, it creates a file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def crafted(path: Path, marker: Path, fmt: str) -> None:
    payload = {"options": {"model": "unet2d"}, "epoch": 1, "model": Touch(marker)}
    if fmt == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)


def test_the_tool_s_checkpoints_load_as_plain_weights(trained):
    run = trained.baselines / "unet2d__dice_ce"
    for name in ("best.pt", CHECKPOINT):
        saved = torch.load(run / name, map_location="cpu", weights_only=True)
        assert saved["options"]["model"] == "unet2d" and saved["epoch"] == 1
        assert all(isinstance(v, torch.Tensor) for v in saved["model"].values())


@pytest.mark.parametrize("fmt, refusal", [
    ("torch", "holds objects only full unpickling would rebuild"),  # torch.save's zip: its globals are named
    ("pickle", "is corrupt or not a checkpoint"),  # a bare pickle: opcodes the weights-only reader does not take
])
@pytest.mark.parametrize("command", [
    ["segment", "{scan}", "--output", "{out}", "--model", "unet2d__dice_ce", "--device", "cpu"],
    ["baseline", "predict", "--model", "unet2d", "--loss", "dice_ce", "--device", "cpu"],
], ids=["segment", "baseline-predict"])
def test_a_crafted_best_pt_runs_nothing_and_is_refused(ws, phantom_root, tmp_path, command, fmt, refusal):
    best = ws.baselines / "unet2d__dice_ce" / "best.pt"
    marker = tmp_path / "pwned"
    crafted(best, marker, fmt)
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    result = invoke(ws, *(part.format(scan=scan, out=tmp_path / "out") for part in command))
    assert not marker.exists()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"{best} {refusal}" in said(result) and "train it again" in said(result)
    assert not (tmp_path / "out").exists()  # refused before writing: no output folder left behind


def test_a_crafted_resume_checkpoint_runs_nothing_and_is_refused(ws, tmp_path):
    checkpoint = ws.baselines / "unet2d__dice_ce" / CHECKPOINT
    marker = tmp_path / "pwned"
    crafted(checkpoint, marker, "torch")
    result = invoke(ws, *train(2))  # a resume
    assert not marker.exists()
    assert result.exit_code == 1 and f"{checkpoint} holds objects only full unpickling" in said(result)
    assert "delete it to train unet2d__dice_ce afresh" in said(result)


def _old_format(path: Path) -> None:  # a dataclass where a plain dict belongs: only full unpickling rebuilds it
    torch.save({"options": TrainOptions(), "model": {}, "epoch": 1}, path)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"not a checkpoint at all " * 8), "is corrupt or not a checkpoint"),
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "is corrupt or not a checkpoint"),
    (lambda p: p.write_bytes(b""), "is corrupt or not a checkpoint"),
    (lambda p: torch.save([1, 2, 3], p), "is not a checkpoint of ibsr-nnunet's baselines"),
    (_old_format, "holds objects only full unpickling would rebuild"),
], ids=["garbage", "truncated", "empty", "a-list", "old-format"])
def test_a_damaged_best_pt_is_one_sentence(ws, phantom_root, tmp_path, damage, message):
    best = ws.baselines / "unet2d__dice_ce" / "best.pt"
    damage(best)
    scan = phantom_root / "misa" / "Test_Set" / "IBSR_08" / "IBSR_08.nii.gz"
    result = invoke(ws, "segment", str(scan), "--output", str(tmp_path / "out"), "--model", "unet2d__dice_ce",
                    "--device", "cpu")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{best} {message}" in said(result) and "Traceback" not in result.output


def test_read_checkpoint_names_the_file_and_the_fix(tmp_path):
    from baselines.run_folder import read_checkpoint

    path = tmp_path / "best.pt"
    torch.save({"epoch": 3}, path)  # loads, but is not ours
    with pytest.raises(InputError, match=rf"^{path} is not a checkpoint of .* lacks options, model\); redo it\.$"):
        read_checkpoint(path, "redo it")

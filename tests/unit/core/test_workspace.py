import os

import pytest

from ibsr_nnunet.core.atomic import write_json, write_text
from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.workspace import Workspace


def test_paths_and_env(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, "placeholder")  # recorded first, so export_env's values are undone after the test
        monkeypatch.delenv(name)
    ws = Workspace.open(tmp_path / "ws")
    assert ws.raw_dataset == tmp_path / "ws" / "nnUNet_raw" / "Dataset501_IBSR18"
    assert ws.preprocessed_dataset == tmp_path / "ws" / "nnUNet_preprocessed" / "Dataset501_IBSR18"
    assert ws.manifest.parent == ws.raw_dataset
    ws.export_env()
    assert os.environ["nnUNet_raw"] == str(tmp_path / "ws" / "nnUNet_raw")
    assert os.environ["nnUNet_results"] == str(tmp_path / "ws" / "nnUNet_results")


def test_env_variable_and_recorded_dataset_id(tmp_path, monkeypatch):
    monkeypatch.setenv("IBSR_NNUNET_WORKSPACE", str(tmp_path / "env-ws"))
    ws = Workspace.open()
    assert ws.root == tmp_path / "env-ws" and ws.dataset_id == 501
    Workspace(ws.root, 777).record_dataset_id()
    assert Workspace.open().dataset_name == "Dataset777_IBSR18"


def test_default_is_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("IBSR_NNUNET_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Workspace.open().root == tmp_path / "ibsr-workspace"


def test_unwritable_workspace_names_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match="--workspace") as err:
        Workspace.open(blocker / "ws").ensure_writable()
    assert str(blocker / "ws") in str(err.value)


def test_atomic_write_leaves_no_temp(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    write_json(tmp_path / "x.json", {"a": 2})
    assert (tmp_path / "x.json").read_text().strip().endswith("}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "leaderboard.csv", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "leaderboard.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "leaderboard.csv").read_text() == "x\n"
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.csv"]

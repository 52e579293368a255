"""One CliRunner test (or more) per command: exit codes, what is printed, what is written.

Where a command is tested elsewhere: evaluate/leaderboard in test_leaderboard.py, submit/status in test_campaign.py,
segment in test_segment.py, baseline train/predict in test_baselines_train.py, train and ensemble refusals in
test_nnunet.py and test_ensemble.py (their real runs are integration tests), demo's real run in test_demo.py.
"""

import json

from helpers import invoke, said


def test_help_lists_commands():
    result = invoke(None, "--help")
    assert result.exit_code == 0
    for command in ("phantom", "convert", "demo"):
        assert command in result.output


def test_phantom_command(tmp_path):
    result = invoke(None, "phantom", str(tmp_path / "p"), "--subjects", "2", "--layout", "nitrc")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["IBSR_01", "IBSR_02"]
    assert "wrote 2 small phantom subjects in the nitrc layout" in result.output


def test_phantom_bad_layout(tmp_path):
    result = invoke(None, "phantom", str(tmp_path / "p"), "--layout", "dicom")
    assert result.exit_code == 2
    assert "'dicom' is not one of 'misa', 'nitrc', 'analyze'" in said(result), result.output
    assert not (tmp_path / "p").exists()


def test_convert_command_then_noop(phantom_root, tmp_path):
    ws = tmp_path / "ws"
    args = ["--workspace", str(ws), "convert", str(phantom_root / "misa"), "--jobs", "2"]
    first = invoke(None, *args)
    assert first.exit_code == 0, first.output
    assert "Dataset501_IBSR18" in first.output and "IBSR_06, IBSR_07" in first.output
    dataset = ws / "nnUNet_raw" / "Dataset501_IBSR18"
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 5
    second = invoke(None, *args)
    assert second.exit_code == 0 and "already up to date" in second.output


def test_convert_workspace_from_environment(phantom_root, tmp_path):
    result = invoke(None, "convert", str(phantom_root / "analyze"), "--dataset-id", "777",
                    env={"IBSR_NNUNET_WORKSPACE": str(tmp_path / "envws")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envws" / "nnUNet_raw" / "Dataset777_IBSR18" / "dataset.json").is_file()


def test_convert_refusal_is_one_sentence_and_exit_1(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "ws", "convert", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "error:" in result.output and "no IBSR18 layout found" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ws" / "nnUNet_raw").exists()


def test_convert_bad_label_map(phantom_root, tmp_path):
    result = invoke(tmp_path / "ws", "convert", str(phantom_root / "nitrc"),
                    "--label-map", "128=CSF,192=GM")
    assert result.exit_code == 1 and "must name each of CSF, GM and WM" in result.output


def test_demo_refuses_a_missing_source(tmp_path):
    result = invoke(tmp_path / "ws", "demo", "--source", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "is not a folder" in result.output and "IBSR18" in result.output
    assert not (tmp_path / "ws" / "demo-logs").exists()


def test_plan_command_on_a_planned_workspace_is_up_to_date(planned_copy):
    result = invoke(planned_copy, "plan", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "up to date, nothing redone" in said(result)
    assert "2d" in said(result) and "3d_fullres" in said(result)


def test_plan_refuses_a_workspace_without_a_dataset(tmp_path):
    result = invoke(tmp_path / "ws", "plan")
    assert result.exit_code == 1
    assert "no converted dataset" in said(result) and "ibsr-nnunet convert" in said(result)
    assert "Traceback" not in result.output


def test_plan_refuses_an_unknown_configuration(converted_copy):
    result = invoke(converted_copy, "plan", "--configs", "2d,4d")
    assert result.exit_code != 0 and "4d" in said(result)
    assert not converted_copy.preprocessed_dataset.joinpath("nnUNetPlans.json").exists()

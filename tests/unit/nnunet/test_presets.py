"""nnunet/presets.py and the names of presets' models: the table against nnU-Net's own planners, parsing
--presets, model names, and the refusal of a preset that does not fit the GPUs' memory."""

from __future__ import annotations

import pytest

from ibsr_nnunet.core.errors import InputError
from ibsr_nnunet.core.vocabulary import NNUNET_MODEL_KEYS, NNUNET_MODELS, nnunet_model_name
from ibsr_nnunet.core.workspace import Workspace
from ibsr_nnunet.nnunet.paths import MODEL_FOLDER, Member, model_folder, plan_stamp, plans_file
from ibsr_nnunet.nnunet.presets import PRESET_TABLE, preset_named, presets_named, refuse_oversized


def test_each_preset_is_nnunets_planner_with_its_plans_name_and_memory_target():
    import inspect

    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners as res

    planners = {"ExperimentPlanner": ExperimentPlanner, **{name: getattr(res, name) for name in (
        "nnUNetPlannerResEncM", "nnUNetPlannerResEncL", "nnUNetPlannerResEncXL")}}
    for preset in PRESET_TABLE.values():
        defaults = inspect.signature(planners[preset.planner].__init__).parameters
        assert defaults["plans_name"].default == preset.plans
        assert defaults["gpu_memory_target_in_gb"].default == preset.gpu_memory_gb
    assert [p.gpu_memory_gb for p in PRESET_TABLE.values()] == [8, 8, 24, 40]


@pytest.mark.parametrize("text, names", [
    ("default", ["default"]), ("resenc-l,default", ["default", "resenc-l"]),
    (" resenc-m , resenc-m,resenc-xl", ["resenc-m", "resenc-xl"]),
])
def test_presets_are_parsed_in_table_order_once_each(text, names):
    assert [p.name for p in presets_named(text)] == names


@pytest.mark.parametrize("text, refusal", [
    ("resenc-q", r"^unknown presets 'resenc-q' \(did you mean resenc-m\?\); pass --presets with one of default, "
                 r"resenc-m, resenc-l, resenc-xl\.$"),
    (" , ", r"^--presets is empty; pass one or more of default, resenc-m, resenc-l, resenc-xl, comma-separated\.$"),
])
def test_an_unknown_or_empty_preset_list_is_refused(text, refusal):
    with pytest.raises(InputError, match=refusal):
        presets_named(text)


def test_model_names_keep_the_default_and_carry_the_preset_tag():
    assert NNUNET_MODELS == {"2d": "nnunet_2d", "3d_fullres": "nnunet_3d_fullres", "ensemble": "nnunet_ensemble"}
    assert nnunet_model_name("3d_fullres", "resenc-m") == "nnunet_resencm_3d_fullres"
    assert nnunet_model_name("ensemble", "resenc-xl") == "nnunet_resencxl_ensemble"
    assert len(NNUNET_MODEL_KEYS) == 4 * 3 + 1
    assert NNUNET_MODEL_KEYS["nnunet_cross_preset_ensemble"] == (None, "ensemble")
    assert NNUNET_MODEL_KEYS["nnunet_resencl_2d"] == ("resenc-l", "2d")


def test_folders_stamps_and_members_of_a_preset(tmp_path):
    ws = Workspace(tmp_path / "ws", 501)
    m = preset_named("resenc-m")
    assert plans_file(ws, m).name == "nnUNetResEncUNetMPlans.json"
    assert plan_stamp(ws).name == "ibsr_plan.json"
    assert plan_stamp(ws, m).name == "ibsr_plan_nnUNetResEncUNetMPlans.json"
    folder = model_folder(ws, "2d", "IbsrTrainer", m.plans)
    assert folder.name == "IbsrTrainer__nnUNetResEncUNetMPlans__2d"
    match = MODEL_FOLDER.fullmatch(folder.name)
    assert (match["trainer"], match["plans"], match["configuration"]) == ("IbsrTrainer", m.plans, "2d")
    assert MODEL_FOLDER.fullmatch("IbsrTrainer__MyPlans__2d") is None
    member = Member(m.plans, "3d_fullres")
    assert (member.name, member.label, member.preset.option()) == (
        "nnunet_resencm_3d_fullres", "resenc-m 3d_fullres", " --preset resenc-m")
    assert Member("nnUNetPlans", "2d").label == "2d" and PRESET_TABLE["default"].option() == ""


def test_a_preset_larger_than_the_gpus_memory_is_refused():
    refuse_oversized(tuple(PRESET_TABLE.values()), None)  # not said: not checked
    refuse_oversized(tuple(PRESET_TABLE.values()), 40)
    with pytest.raises(InputError, match=r"^--gpu-memory 24 GB is less than the GPU memory nnU-Net sizes resenc-xl "
                                         r"\(40 GB\) for: it would run out of memory; use default, resenc-m, resenc-l "
                                         r"instead\.$"):
        refuse_oversized((PRESET_TABLE["resenc-l"], PRESET_TABLE["resenc-xl"]), 24)
    with pytest.raises(InputError, match=r"resenc-m \(8 GB\).*use a GPU with more memory\.$"):
        refuse_oversized((PRESET_TABLE["resenc-m"],), 6)

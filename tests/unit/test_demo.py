"""ibsr_nnunet.demo: the steps and budgets the demo runs, on the phantom and on a real tree."""

from pathlib import Path

from baselines.registry import MODELS as BASELINES
from ibsr_nnunet.demo import budget_for, steps


def test_phantom_plan_trains_fold_0_of_each_configuration_and_a_real_tree_folds_0_and_1():
    phantom = steps(Path("src"), budget_for(None), device="cpu", jobs=2)
    assert [step.name for step in phantom] == [
        "convert", "plan", "train 2d fold 0", "train 3d_fullres fold 0", "ensemble",
        *(f"{verb} {model}" for model in BASELINES for verb in ("baseline", "predict")), "leaderboard"]
    assert phantom[2].args == ["train", "--fold", "0", "--config", "2d", "--epochs", "3",
                               "--iterations-per-epoch", "10", "--device", "cpu", "--seed", "0"]
    assert phantom[5].args[-12:] == ["--epochs", "8", "--iterations-per-epoch", "20", "--width", "8",
                                     "--patch-size", "32", "--batch-size", "4", "--lr", "0.01"]
    assert phantom[5].args[:10] == ["baseline", "train", "--model", "unet2d", "--loss", "dice_ce", "--device", "cpu",
                                    "--threads", "2"]
    unet3d = next(step for step in phantom if step.name == "baseline unet3d")
    assert unet3d.args[-8:] == ["--width", "8", "--patch-size", "32", "--batch-size", "2", "--lr", "0.01"]
    real = steps(Path("src"), budget_for(Path("src"), epochs=3), device="cuda", jobs=4)
    assert [step.name for step in real if step.name.startswith("train")] == [
        "train 2d fold 0", "train 2d fold 1", "train 3d_fullres fold 0", "train 3d_fullres fold 1"]
    assert real[2].args[5:8] == ["--epochs", "3", "--iterations-per-epoch"]
    assert real[7].args[-8:] == ["--device", "cuda", "--threads", "4", "--epochs", "5", "--iterations-per-epoch",
                                 "200"]  # 1000 iterations, whatever the machine
    timed = steps(Path("src"), budget_for(Path("src"), baseline_minutes=12.0), device="cuda", jobs=4)
    assert timed[7].args[-4:] == ["--minutes", "12.0", "--iterations-per-epoch", "200"]

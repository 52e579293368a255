"""The baselines' names, without torch: what the CLI lists and validates (`--model`, `--loss`, `--baselines`)."""

MODELS = ("unet2d", "resunet2d", "denseunet2d", "unet3d")
LOSSES = ("ce", "dice", "dice_ce", "focal", "tversky", "focal_tversky")
OPTIMIZERS = ("adam", "sgd", "adadelta")
SCHEDULES = ("plateau", "cosine")

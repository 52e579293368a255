"""The project's words, each defined once: tissue labels, folds, nnU-Net configurations and presets, model names, NSD
tolerance."""

TISSUES = {1: "CSF", 2: "GM", 3: "WM"}  # nnU-Net label value -> tissue name
NNUNET_LABELS = {"background": 0, **{name: value for value, name in TISSUES.items()}}  # dataset.json "labels"
N_FOLDS = 5  # nnU-Net's cross-validation
SPLITS_FILE = "splits_final.json"  # nnU-Net's folds: in the raw dataset (convert) and the preprocessed one
CONFIGURATIONS = ("2d", "3d_fullres")  # what nnU-Net plans for IBSR-sized images (3d_lowres is dropped)
NNUNET_PREFIX = "nnunet_"  # leaderboard / prediction-set names of nnU-Net models: nnunet_2d, nnunet_ensemble, ...
PRESETS = ("default", "resenc-m", "resenc-l", "resenc-xl")  # nnU-Net's plans presets: the original, residual encoders
DEFAULT_PRESET = PRESETS[0]
PRESET_TAGS = {"default": "", "resenc-m": "resencm", "resenc-l": "resencl", "resenc-xl": "resencxl"}  # in model names


def nnunet_model_name(key: str, preset: str = DEFAULT_PRESET) -> str:
    """nnunet_2d, nnunet_ensemble (default plans), nnunet_resencm_3d_fullres, nnunet_resencl_ensemble, ..."""
    tag = PRESET_TAGS[preset]
    return f"{NNUNET_PREFIX}{tag}_{key}" if tag else f"{NNUNET_PREFIX}{key}"


NNUNET_MODELS = {key: nnunet_model_name(key) for key in (*CONFIGURATIONS, "ensemble")}  # of the default plans
# the best two-model ensemble of nnU-Net's search when its members come from two presets
NNUNET_CROSS_ENSEMBLE = f"{NNUNET_PREFIX}cross_preset_ensemble"
# every nnU-Net model name -> (preset, "2d" | "3d_fullres" | "ensemble"); the cross-preset ensemble has preset None
NNUNET_MODEL_KEYS = {**{nnunet_model_name(key, preset): (preset, key) for preset in PRESETS
                        for key in (*CONFIGURATIONS, "ensemble")}, NNUNET_CROSS_ENSEMBLE: (None, "ensemble")}
PHANTOM_SIZES = ("small", "full", "demo")  # synthetic subjects: 64×32×64, 256×128×256 like IBSR18, or the demo's
NSD_TOLERANCE = 1.0  # mm: default tolerance tau of the normalised surface distance (evaluate, leaderboard)
BASELINE_SEPARATOR = "__"  # a baseline's name is MODEL__LOSS, e.g. unet2d__dice_ce

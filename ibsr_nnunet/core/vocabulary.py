"""The project's words, each defined once: tissue labels, folds, nnU-Net configurations, model names, NSD tolerance."""

TISSUES = {1: "CSF", 2: "GM", 3: "WM"}  # nnU-Net label value -> tissue name
NNUNET_LABELS = {"background": 0, **{name: value for value, name in TISSUES.items()}}  # dataset.json "labels"
N_FOLDS = 5  # nnU-Net's cross-validation
SPLITS_FILE = "splits_final.json"  # nnU-Net's folds: in the raw dataset (convert) and the preprocessed one
CONFIGURATIONS = ("2d", "3d_fullres")  # what nnU-Net plans for IBSR-sized images (3d_lowres is dropped)
NNUNET_PREFIX = "nnunet_"  # leaderboard / prediction-set names of nnU-Net models: nnunet_2d, nnunet_ensemble, ...
NNUNET_MODELS = {key: f"{NNUNET_PREFIX}{key}" for key in (*CONFIGURATIONS, "ensemble")}
PHANTOM_SIZES = ("small", "full", "demo")  # synthetic subjects: 64×32×64, 256×128×256 like IBSR18, or the demo's
NSD_TOLERANCE = 1.0  # mm: default tolerance tau of the normalised surface distance (evaluate, leaderboard)
BASELINE_SEPARATOR = "__"  # a baseline's name is MODEL__LOSS, e.g. unet2d__dice_ce

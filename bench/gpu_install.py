"""Install recipe for a GPU machine whose image has torch (and the scientific stack) but not nnunetv2, SimpleITK or
nibabel, and cannot reach a package index: carry wheels, install them offline.

On a machine with pip access, in the checkout:

    python bench/gpu_install.py pack .whl          # downloads CARRY for the target Python, builds acvl-utils'
                                                   # wheel, packs them all into .whl/wheels.tar.xz

(39 MB: the wheels are repacked uncompressed so that xz sees the raw bytes; SimpleITK's 53 MB wheel alone shrinks
to 29 MB). Carry that folder and the checkout to the GPU machine and there, in the checkout:

    python3 bench/gpu_install.py install .whl --target /tmp/site && export PYTHONPATH=/tmp/site
    python3 bench/gpu_install.py missing           # prints nothing and exits 0 when every import is satisfied

`install` also builds ibsr-nnunet itself from the checkout (pure Python, offline: the image has setuptools), so
the code that runs is the code carried. `--no-deps` everywhere: the image's own numpy, torch, scipy, pandas,
matplotlib... stay as they are, and only the distributions in CARRY are added. CARRY is what
`import ibsr_nnunet.cli, baselines, nnunetv2` loads beyond IMAGE
(the package list of a CUDA image with torch 2.11, Python 3.12); tests/workspace/test_gpu_check.py checks it against
what the imports really load, so a new dependency cannot be forgotten here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Distributions to carry (normalised names), with the versions installed beside the checkout used when packing.
CARRY = ("acvl-utils", "batchgenerators", "batchgeneratorsv2", "blosc2", "connected-components-3d",
         "dynamic-network-architectures", "ibsr-nnunet", "isal", "ndindex", "nibabel", "nnunetv2", "simpleitk")
BUILT_HERE = ("acvl-utils", "ibsr-nnunet")  # no wheel on PyPI: acvl-utils is an sdist, ibsr-nnunet is the checkout
# What the GPU image already holds (normalised names; torch, numpy, scipy, pandas, matplotlib, scikit-image, ...).
IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split())
ENTRY_MODULES = ("ibsr_nnunet.cli", "ibsr_nnunet.nnunet.train", "ibsr_nnunet.nnunet.plan", "ibsr_nnunet.nnunet.predict",
                 "ibsr_nnunet.nnunet.ensemble", "ibsr_nnunet.segment", "baselines.train", "baselines.infer",
                 "nnunetv2.run.run_training", "nnunetv2.inference.predict_from_raw_data",
                 "nnunetv2.experiment_planning.plan_and_preprocess_api", "nnunetv2.evaluation.find_best_configuration",
                 "nnunetv2.postprocessing.remove_connected_components")
STDLIB_SHADOWS = {"argparse"}  # distributions on PyPI that only shadow a standard-library module
OPTIONAL = {"imagecodecs"}  # imported inside try/except when present (by tifffile); 26 MB not worth carrying
# imported inside try/except when present (wandb by nnU-Net's logger: the `tracking` extra, which the GPU check does
# not use), so kept out of the import that decides what to carry
NOT_IMPORTED = ("wandb",)
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64")


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def imported_distributions(modules: tuple[str, ...] = ENTRY_MODULES) -> set[str]:
    """Normalised names of the distributions whose top-level packages importing `modules` loads (NOT_IMPORTED
    blocked)."""
    for name in NOT_IMPORTED:
        sys.modules.setdefault(name, None)  # `import wandb` then raises ImportError, as where it is not installed
    for module in modules:
        importlib.import_module(module)
    owners = metadata.packages_distributions()
    found = set()
    for module, loaded in list(sys.modules.items()):
        if loaded is None:  # a blocked or failed import loaded nothing
            continue
        for dist in owners.get(module.split(".")[0], ()):
            found.add(normalise(dist))
    return found - STDLIB_SHADOWS - OPTIONAL


def missing() -> list[str]:
    """The distributions the entry modules need that cannot be imported here (empty when all is well)."""
    absent = []
    for module in ENTRY_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as err:
            absent.append(f"{module}: {err}")
    return absent


def pack(folder: Path, python_version: str) -> Path:
    """Download CARRY's wheels for `python_version` on x86-64 Linux, build the two that PyPI lacks, pack them."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp)
        pinned = [f"{name}=={metadata.version(name)}" for name in CARRY if name not in BUILT_HERE]
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(wheels),
                        *pinned], check=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                        f"acvl-utils=={metadata.version('acvl-utils')}"], check=True)
        bundle = folder / "wheels.tar.xz"
        partial = folder / "wheels.tar.xz.tmp"
        with tarfile.open(partial, "w:xz", preset=6) as tar:
            for wheel in sorted(wheels.glob("*.whl")):
                tar.add(stored(wheel), arcname=wheel.name)
        partial.replace(bundle)
    return bundle


def stored(wheel: Path) -> Path:
    """The same wheel with its members stored uncompressed, so that xz sees the raw bytes: SimpleITK's 53 MB
    deflated wheel packs to 29 MB this way, and to about 52 MB as it is. Members and RECORD are unchanged."""
    plain = wheel.with_suffix(".stored")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(plain, "w", zipfile.ZIP_STORED) as copy:
        for member in source.infolist():
            data = source.read(member)
            member.compress_type = zipfile.ZIP_STORED
            copy.writestr(member, data)
    return plain


def install(folder: Path, target: Path) -> None:
    """Unpack the bundle and install every wheel, and ibsr-nnunet from the checkout, offline and without
    dependencies, into `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(folder / "wheels.tar.xz") as tar:
            tar.extractall(tmp, filter="data")
        wheels = sorted(str(w) for w in Path(tmp).glob("*.whl") if not w.name.startswith("ibsr_nnunet-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--no-build-isolation", "--upgrade", "--target", str(target), *wheels,
                        str(REPO)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="download and build the wheels, pack them into FOLDER/wheels.tar.xz")
    packing.add_argument("folder", type=Path)
    packing.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    installing = commands.add_parser("install", help="install FOLDER/wheels.tar.xz offline into --target")
    installing.add_argument("folder", type=Path)
    installing.add_argument("--target", type=Path, required=True)
    commands.add_parser("missing", help="list the imports that fail here; exit 1 if any")
    args = parser.parse_args()
    if args.command == "pack":
        bundle = pack(args.folder, args.python_version)
        print(f"{bundle}: {bundle.stat().st_size / 1e6:.1f} MB")
    elif args.command == "install":
        install(args.folder, args.target)
    else:
        absent = missing()
        print("\n".join(absent))
        raise SystemExit(1 if absent else 0)


if __name__ == "__main__":
    main()

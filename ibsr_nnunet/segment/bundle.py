"""Model bundles: one zip with everything `segment` needs of one trained model (`export`), installed, file by file
checked against its manifest, as a workspace of its own that `segment --model FILE.zip` runs in.

    DatasetNNN_NAME/<trainer>__<plans>__<configuration>/...  an nnU-Net model's files in nnU-Net's own export layout
                        (plans.json, dataset.json, dataset_fingerprint.json, fold_F/checkpoint_final.pth, the
                        postprocessing.pkl of its cross-validation folder), so nnU-Net's
                        `nnUNetv2_install_pretrained_model_from_zip` installs it into nnUNet_results too
    ibsr_bundle/bundle.json     format, model, kind, dataset (name, id, fingerprint, split), versions (ibsr-nnunet,
                                nnunetv2, torch), the model's leaderboard row, files {name: {sha256, bytes}}
    ibsr_bundle/workspace/...   our records at their workspace paths: workspace.json, the conversion manifest and
                                dataset.json, nnU-Net's dataset fingerprint (the intensity reference of the scan
                                warnings), a baseline's run folder or an nnU-Net prediction set's model.json, their
                                provenance, leaderboard.csv with the model's row, training_volumes.json (the QC
                                reference: the bundle carries no training labels)

Nothing in a bundle is unpickled before its bytes match the manifest's sha256; a baseline's weights load with
torch's weights_only loader. A bundle installs under a folder named by its own hash, so installing it again reuses
the installed copy once its files check out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

import pandas as pd

from ..core.atomic import atomic_path, write_json
from ..core.checksums import sha256
from ..core.errors import InputError
from ..core.jsonfile import parse_json, read_json_object
from ..core.manifest import manifest_path, read_manifest
from ..core.names import check_model_name
from ..core.workspace import WORKSPACE_FILE, Workspace
from ..models import checked_name, kind_of, load_model, trained_models
from ..models.protocol import TrainedModel
from ..nnunet.paths import fingerprint_file
from ..nnunet.prediction_record import prediction_record_path, read_prediction_record, write_prediction_record
from .quality import TRAINING_VOLUMES_FILE, training_volumes, training_volumes_record

FORMAT = 1  # bundle.json's "format": a reader refuses a newer one
BUNDLE = "ibsr_bundle"
MANIFEST = f"{BUNDLE}/bundle.json"
OURS = f"{BUNDLE}/workspace"
INSTALLED = ".installed"  # written last into an installed bundle: its files were checked
CACHE_ENV = "IBSR_NNUNET_BUNDLES"  # where bundles are installed (default ~/.cache/ibsr-nnunet/bundles)
STORED = (".pth", ".pt", ".pkl")  # torch's files are zip archives already: stored, not compressed again
REEXPORT = "export it again with `ibsr-nnunet export`"


@dataclass(frozen=True)
class Exported:
    path: Path
    model: str
    kind: str
    files: int
    bytes: int


def _versions() -> dict[str, str]:
    found = {}
    for package in ("ibsr-nnunet", "nnunetv2", "torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _arcname(ws: Workspace, path: Path) -> str:
    """Where a workspace file goes in the bundle: nnU-Net's results at the root (nnU-Net's layout), ours below
    ibsr_bundle/workspace/."""
    path = Path(path).resolve()
    results = ws.nnunet_results.resolve()
    if path.is_relative_to(results):
        return path.relative_to(results).as_posix()
    return f"{OURS}/{path.relative_to(ws.root.resolve()).as_posix()}"


def bundle_files(ws: Workspace, model: TrainedModel) -> list[Path]:
    """Every workspace file a bundle of `model` carries (the records it writes itself aside)."""
    shared = [ws.root / WORKSPACE_FILE, manifest_path(ws.raw_dataset), ws.raw_dataset / "dataset.json",
              fingerprint_file(ws)]
    return [p for p in shared if p.is_file()] + model.portable_files()


def _leaderboard_row(ws: Workspace, name: str) -> Optional[pd.DataFrame]:
    if not ws.leaderboard.is_file():
        return None
    board = pd.read_csv(ws.leaderboard)
    row = board[board["model"] == name]
    return row if not row.empty else None


def _ready(ws: Workspace, name: str) -> TrainedModel:
    checked_name(name)
    model = load_model(ws, name)
    if model is None or not model.trained():
        listed = ", ".join(m.name for m in trained_models(ws)) or "none"
        raise InputError(f"{name} is not a trained model of {ws.root} (trained here: {listed}); pass one of those.")
    if why := model.refusal(then="export"):
        raise InputError(why)
    return model


def exportable(ws: Workspace) -> list[tuple[str, str, int]]:
    """(model, kind, bytes of its bundle's files) of every ready model of the workspace."""
    found = []
    for model in trained_models(ws):
        if model.refusal(then="export") is None:
            found.append((model.name, model.kind, sum(p.stat().st_size for p in bundle_files(ws, model))))
    return found


def export_model(ws: Workspace, name: str, output: Path, *, say: Callable[[str], None] = print) -> Exported:
    """Write the bundle of model `name` to `output` (a .zip), atomically."""
    output = Path(output)
    if output.suffix != ".zip":
        raise InputError(f"--output {output} must be a .zip file; pass e.g. --output {output.with_suffix('.zip')}.")
    manifest = read_manifest(ws)
    model = _ready(ws, name)
    files = {_arcname(ws, p): p for p in bundle_files(ws, model)}
    extra: dict[str, bytes] = {}
    row = _leaderboard_row(ws, name)
    if row is not None:
        extra[f"{OURS}/{ws.leaderboard.name}"] = row.to_csv(index=False).encode()
    else:
        say(f"note: {name} is not on {ws.leaderboard}: the bundle carries no held-out scores")
    volumes = training_volumes_record(training_volumes(ws, manifest), manifest)
    extra[f"{OURS}/{TRAINING_VOLUMES_FILE}"] = json.dumps(volumes, indent=2).encode()
    record = prediction_record_path(model.folder)
    listing = {arc: {"sha256": sha256(path), "bytes": path.stat().st_size} for arc, path in files.items()}
    listing.update({arc: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for arc, data in
                    extra.items()})
    bundle = {
        "format": FORMAT, "model": name, "kind": model.kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "dataset": {"name": ws.dataset_name, "id": ws.dataset_id, "fingerprint": manifest.fingerprint,
                    "split": manifest.split.policy, "held_out": list(manifest.split.heldout)},
        "versions": _versions(),
        "leaderboard": row.to_dict(orient="records")[0] if row is not None else None,
        # absolute in the workspace, so rewritten where the bundle is installed
        "postprocessing": _arcname(ws, model.postprocessing_file) if record.is_file() else None,
        "files": dict(sorted(listing.items())),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as temporary:
        with zipfile.ZipFile(temporary, "w") as archive:
            for arc, path in sorted(files.items()):
                archive.write(path, arc, compress_type=zipfile.ZIP_STORED if path.suffix in STORED
                              else zipfile.ZIP_DEFLATED)
            for arc, data in sorted(extra.items()):
                archive.writestr(arc, data, compress_type=zipfile.ZIP_DEFLATED)
            archive.writestr(MANIFEST, json.dumps(bundle, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    return Exported(output, name, model.kind, len(listing) + 1, output.stat().st_size)


# ---- installing ---------------------------------------------------------------------------------------------------

def is_bundle(value: str) -> bool:
    """Whether `segment --model VALUE` names a bundle (a .zip, or a folder one was unpacked into) over a model."""
    try:
        return value.endswith(".zip") or (Path(value) / MANIFEST).is_file()
    except OSError:  # a name longer than a path may be: a model name, refused as one
        return False


def _refuse(source: Path, what: str) -> InputError:
    return InputError(f"{source} is not a usable model bundle: {what}; {REEXPORT}.")


def _checked_manifest(source: Path, saved: object) -> dict:
    """bundle.json, refused in one sentence when it is of a newer format, names a model wrongly, or lists files
    outside the bundle's two places."""
    if not isinstance(saved, dict) or not isinstance(saved.get("files"), dict):
        raise _refuse(source, f"{MANIFEST} is not a bundle manifest")
    fmt = saved.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise _refuse(source, f"{MANIFEST} has no format number")
    if fmt > FORMAT:
        raise InputError(f"{source} is a model bundle of format {fmt}, newer than this ibsr-nnunet reads "
                         f"({FORMAT}); upgrade ibsr-nnunet (pip install -U ibsr-nnunet) to use it.")
    name = saved.get("model")
    try:
        check_model_name(str(name), "the bundle's model")
        kind = kind_of(str(name))
    except InputError:
        kind = None
    if not isinstance(name, str) or kind is None or kind.kind != saved.get("kind"):
        raise _refuse(source, f"its model {str(name)[:40]!r} is not a {saved.get('kind')} model name")
    for arc, entry in saved["files"].items():
        if not _safe(arc) or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not isinstance(entry.get("bytes"), int):
            raise _refuse(source, f"its manifest lists {str(arc)[:80]!r}, which is not a file of a bundle")
    return saved


def _safe(arc: str) -> bool:
    """A relative path below the bundle's root with no '..', in ibsr_bundle/workspace/ or an nnU-Net dataset."""
    path = PurePosixPath(arc)
    if path.is_absolute() or ".." in path.parts or "\\" in arc or not path.parts:
        return False
    return arc.startswith(f"{OURS}/") or (path.parts[0].startswith("Dataset") and len(path.parts) > 1)


def _target(root: Path, arc: str) -> Path:
    """Where a bundle file goes in the installed workspace."""
    if arc.startswith(f"{OURS}/"):
        return root / arc[len(OURS) + 1:]
    return root / "nnUNet_results" / arc


def _read_zip(source: Path) -> tuple[dict, Callable[[str, Path], None]]:
    """The zip's checked manifest, and a function that copies one of its files out (each copy opens the zip and
    closes it again: no archive stays open)."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = {info.filename for info in archive.infolist() if not info.is_dir()}
            manifest = _checked_manifest(source, parse_json(archive.read(MANIFEST), f"{source}: {MANIFEST}",
                                                            REEXPORT))
    except FileNotFoundError:
        raise InputError(f"--model {source}: no such file; pass a bundle written by `ibsr-nnunet export`.") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise _refuse(source, f"it cannot be read as a zip with {MANIFEST} (cut short or damaged: "
                              f"{' '.join(str(err).split())[:120]})") from None
    unknown = sorted(members - set(manifest["files"]) - {MANIFEST})
    if unknown:
        raise _refuse(source, f"it holds {unknown[0]!r}, which its manifest does not list")

    def copy(arc: str, target: Path) -> None:
        try:
            with zipfile.ZipFile(source) as archive, archive.open(arc) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except KeyError:
            raise _refuse(source, f"{arc} is listed but missing (cut short?)") from None
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise _refuse(source, f"{arc} cannot be read ({' '.join(str(err).split())[:120]})") from None
    return manifest, copy


def _read_folder(source: Path) -> tuple[dict, Callable[[str, Path], None]]:
    manifest = _checked_manifest(source, read_json_object(source / MANIFEST, REEXPORT, "a bundle manifest"))

    def copy(arc: str, target: Path) -> None:
        try:
            shutil.copyfile(source / arc, target)
        except OSError:
            raise _refuse(source, f"{arc} is listed but missing") from None
    return manifest, copy


def _cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ibsr-nnunet" / "bundles")


def _bundle_id(manifest: dict) -> str:
    """The installed copy's name: the hash of the manifest (which lists every file's hash)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]


def _verified(root: Path, manifest: dict, source: Path, rewritten: Optional[dict] = None) -> None:
    """Every file holds the bytes the manifest lists (`rewritten`: arc -> sha256 of a record installing rewrote)."""
    for arc, entry in manifest["files"].items():
        path = _target(root, arc)
        expected = (rewritten or {}).get(arc, entry["sha256"])
        if not path.is_file() or sha256(path) != expected:
            raise _refuse(source, f"{arc} does not hold the bytes its manifest lists (damaged or edited)")


def install_bundle(source: Path, *, say: Callable[[str], None] = print) -> tuple[Workspace, str, dict]:
    """The workspace a bundle installs into (made once, every file checked against the manifest's sha256), the name
    of its model, and its manifest."""
    source = Path(source)
    manifest, copy = (_read_folder if source.is_dir() else _read_zip)(source)
    root = _cache() / _bundle_id(manifest)
    if (root / INSTALLED).is_file():
        installed = read_json_object(root / INSTALLED, f"remove {root} and run again", "an installed bundle's record")
        _verified(root, manifest, source, installed.get("rewritten"))
        return Workspace.open(root, int(manifest["dataset"]["id"])), manifest["model"], manifest
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}-{os.getpid()}-{time.time_ns()}"
    try:
        for arc in manifest["files"]:
            target = _target(staging, arc)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy(arc, target)
        _verified(staging, manifest, source)  # before anything of it is loaded
        ws = Workspace.open(staging, int(manifest["dataset"]["id"]))
        rewritten = {}
        if manifest.get("postprocessing"):  # model.json names it where the model was trained
            folder = ws.predictions / manifest["model"]
            record = read_prediction_record(folder)
            if record is None:
                raise _refuse(source, f"it names postprocessing but holds no model record of {manifest['model']}")
            write_prediction_record(folder, replace(record, postprocessing_file=_target(
                root, manifest["postprocessing"])))
            record_file = prediction_record_path(folder)
            rewritten[f"{OURS}/{record_file.relative_to(staging).as_posix()}"] = sha256(record_file)
        write_json(staging / INSTALLED, {"source": str(source.resolve()), "rewritten": rewritten})
        try:
            staging.rename(root)
        except OSError:  # another process installed it at the same moment: theirs is as good
            if not (root / INSTALLED).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"installed model bundle {source} ({manifest['model']}) in {root}")
    return Workspace.open(root, int(manifest["dataset"]["id"])), manifest["model"], manifest

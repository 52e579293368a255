"""The layout's rules, checked on the source: stages import only the stages below them, one door to nnunetv2,
one sbatch renderer, baselines without nnU-Net, no import circle, a docstring on every package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# each stage may import its own modules and those of lower stages only (models wraps nnU-Net and the baselines
# behind one interface; evaluation, campaign and segment ask models about a model)
STAGE_RANK = {"core": 0, "nnunet": 1, "data": 2, "baselines": 3, "models": 4, "evaluation": 5, "campaign": 6,
              "segment": 7, "demo": 7, "cli": 8, "__main__": 9}


def modules() -> dict[str, Path]:
    found = {}
    for top in ("ibsr_nnunet", "baselines"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in the file (inside functions too), resolved to absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x` imports module x
    return found


def stage(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "baselines":
        return "baselines"
    if parts[0] == "ibsr_nnunet" and len(parts) > 1:
        return parts[1]
    return None


MODULES = modules()
IMPORTS = {name: {i for i in imports(name, path) if i in MODULES} for name, path in MODULES.items()}
EXTERNAL = {name: imports(name, path) for name, path in MODULES.items()}


def test_every_module_belongs_to_a_known_stage():
    unknown = {m for m in MODULES if m not in ("ibsr_nnunet",) and stage(m) not in STAGE_RANK}
    assert not unknown


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_import_only_their_own_or_lower_stages(name):
    own = stage(name)
    if own is None:
        return
    upward = sorted(target for target in IMPORTS[name] if (s := stage(target)) is not None and s != own
                    and STAGE_RANK[s] >= STAGE_RANK[own])
    assert not upward, f"{name} ({own}) imports {upward}"


def test_only_the_nnunet_package_imports_nnunetv2():
    doors = sorted(name for name, found in EXTERNAL.items() if any(i.split(".")[0] == "nnunetv2" for i in found))
    assert doors and all(name.startswith("ibsr_nnunet.nnunet.") for name in doors), doors


def test_baselines_never_import_nnunet():
    for name, found in EXTERNAL.items():
        if name.startswith("baselines"):
            assert not {i for i in found if i.split(".")[0] == "nnunetv2" or i.startswith("ibsr_nnunet.nnunet")}, name


MODEL_PREFIXES = ("NNUNET_PREFIX", "nnunet_")


def prefix_tests(source: str) -> list[str]:
    """Each `.startswith(...)` whose argument is a model-name prefix (NNUNET_PREFIX or "nnunet_"), as source text:
    a model's kind is asked of the registered kinds (models/registry.py), never read off its name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
            for argument in ast.walk(ast.Module(body=[ast.Expr(a) for a in node.args], type_ignores=[])):
                name = argument.id if isinstance(argument, ast.Name) else getattr(argument, "attr", None)
                text = argument.value if isinstance(argument, ast.Constant) else None
                if name == "NNUNET_PREFIX" or (isinstance(text, str) and text.startswith(MODEL_PREFIXES[1])):
                    found.append(ast.unparse(node))
    return found


def test_the_prefix_check_finds_a_prefix_test():
    fake = ('if name.startswith(NNUNET_PREFIX):\n    pass\nok = model.startswith(vocabulary.NNUNET_PREFIX)\n'
            'other = name.startswith(("x", "nnunet_2"))\nfine = path.startswith("unet")\n')
    assert prefix_tests(fake) == ["name.startswith(NNUNET_PREFIX)", "model.startswith(vocabulary.NNUNET_PREFIX)",
                                  "name.startswith(('x', 'nnunet_2'))"]


def test_no_model_kind_is_told_by_a_name_prefix():
    found = {name: tests for name, path in MODULES.items() if (tests := prefix_tests(path.read_text()))}
    assert not found


def _builds_sbatch_lines(path: Path) -> bool:
    """An f-string or a concatenation that produces `#SBATCH ...` text (help strings merely mention it)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.Constant) and "#SBATCH" in str(v.value)
                                                   for v in node.values):
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.left, ast.Constant) and "#SBATCH" in str(node.left.value):
            return True
    return False


def test_only_the_renderer_writes_sbatch_text():
    writers = sorted(name for name, path in MODULES.items() if _builds_sbatch_lines(path))
    assert writers == ["ibsr_nnunet.campaign.sbatch"]


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(IMPORTS[name]):
            if target == name or name.startswith(target + "."):
                continue  # a module importing its own package's __init__ is how Python resolves it, not a circle
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path + [name, target]))
            if target not in state:
                visit(target, path + [name])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("package", sorted(p for p, path in MODULES.items() if path.name == "__init__.py"))
def test_every_package_says_what_it_is_in_one_line(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert doc and doc.splitlines()[0].strip(), package


# ---- one owner per file format ----------------------------------------------------------------------------------
# file name -> the modules that may spell it: its owner (which reads and writes it) or the module naming its path
OWNED_FILES = {
    "ibsr_manifest.json": {"ibsr_nnunet.core.manifest"},
    "model.json": {"ibsr_nnunet.nnunet.prediction_record"},
    "ibsr_provenance.json": {"ibsr_nnunet.core.provenance"},
    "workspace.json": {"ibsr_nnunet.core.workspace"},
    "runs.jsonl": {"ibsr_nnunet.core.runlog"},
    "run.json": {"baselines.run_folder"},
    "log.csv": {"baselines.run_folder"},
    "checkpoint.pt": {"baselines.run_folder"},
    "best.pt": {"baselines.run_folder"},
    "orientation.json": {"baselines.run_folder"},
    "ensemble.json": {"baselines.ensemble"},
    "best_configuration.json": {"ibsr_nnunet.nnunet.ensemble"},
    "jobs.json": {"ibsr_nnunet.campaign.jobs"},
    "splits_final.json": {"ibsr_nnunet.core.vocabulary"},
    "nnUNetPlans.json": {"ibsr_nnunet.nnunet.paths"},
    "ibsr_plan.json": {"ibsr_nnunet.nnunet.paths"},
    "dataset_fingerprint.json": {"ibsr_nnunet.nnunet.paths"},
    "segment.json": {"ibsr_nnunet.segment.record"},
}
# json.loads of what a file holds happens in core/jsonfile.py only; these parse what their own files hold line by
# line or record by record (runs.jsonl lines, a lock file's bytes)
JSON_PARSERS = {"ibsr_nnunet.core.jsonfile", "ibsr_nnunet.core.runlog", "ibsr_nnunet.core.locks"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (they may name any file)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def format_violations(module: str, source: str) -> list[str]:
    """Where `module`'s source spells a file name it does not own (a literal that is the name, or a path ending in
    it), or parses JSON outside the allowed modules."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            name = node.value.rsplit("/", 1)[-1]
            if name in OWNED_FILES and module not in OWNED_FILES[name]:
                found.append(f"{module}:{node.lineno} spells {name!r} (owned by {sorted(OWNED_FILES[name])})")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("loads", "load") and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "json" and module not in JSON_PARSERS):
            found.append(f"{module}:{node.lineno} calls json.{node.func.attr} (read through core/jsonfile.py or the "
                         f"file's owner)")
    return found


def test_the_format_check_finds_a_stray_reader():
    stray = ('"""Reads model.json, which is fine in a docstring."""\nimport json\n\n'
             'def info(folder):\n    return json.loads((folder / "model.json").read_text())\n')
    assert sorted(format_violations("ibsr_nnunet.evaluation.stray", stray)) == [
        "ibsr_nnunet.evaluation.stray:5 calls json.loads (read through core/jsonfile.py or the file's owner)",
        "ibsr_nnunet.evaluation.stray:5 spells 'model.json' (owned by ['ibsr_nnunet.nnunet.prediction_record'])",
    ]
    assert format_violations("ibsr_nnunet.nnunet.prediction_record", 'RECORD_FILE = "model.json"\n') == []
    assert format_violations("baselines.infer", 'path = folder / "sub/best.pt"\n') == [
        "baselines.infer:1 spells 'best.pt' (owned by ['baselines.run_folder'])"]


def test_each_file_format_is_spelled_and_parsed_by_its_owner_only():
    found = [v for name, path in MODULES.items() for v in format_violations(name, path.read_text())]
    assert not found, "\n".join(found)

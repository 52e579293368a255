"""The layout's rules, checked on the source: stages import only the stages below them, one door to nnunetv2,
one sbatch renderer, baselines without nnU-Net, no import circle, a docstring on every package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# each stage may import its own modules and those of lower stages only (evaluation reads the baselines' run folders)
STAGE_RANK = {"core": 0, "nnunet": 1, "data": 2, "baselines": 3, "evaluation": 4, "campaign": 5, "segment": 6,
              "demo": 6, "cli": 7, "__main__": 8}


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

"""The package's import rules: the layer contracts in pyproject.toml hold (import-linter), and no module reaches
into another module's private (`_name`) functions or constants."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED: set[tuple[str, str, str]] = set()  # (importer, module, name) shared on purpose; none today


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(package: Path = ROOT / "distill") -> list[tuple[str, str, str]]:
    """(importer, module, name) for every `from distill.x import _name` between two different modules."""
    found = []
    for path in sorted(package.rglob("*.py")):
        importer = _module_name(path, package)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distill"):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and node.module != importer:
                        found.append((importer, node.module, alias.name))
    return found


def test_no_module_imports_another_modules_private_names():
    assert [f for f in private_imports() if f not in ALLOWED] == []


def test_the_scan_finds_a_private_import(tmp_path):
    pkg = tmp_path / "distill"
    pkg.mkdir()
    (pkg / "a.py").write_text("from distill.b import _helper\nfrom distill.b import public\n")
    (pkg / "b.py").write_text("from distill.b import _own\n")  # a module's own names are its business
    assert private_imports(pkg) == [("distill.a", "distill.b", "_helper")]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra: pip install -e '.[dev]'"
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([exe, "--no-cache"], cwd=root, env=env, capture_output=True, text=True)


def test_the_import_contracts_hold():
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_the_layers_contract_refuses_teacher_code_importing_the_trainer(tmp_path):
    shutil.copytree(ROOT / "distill", tmp_path / "distill", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    teacher = tmp_path / "distill" / "teacher" / "targets.py"
    text = teacher.read_text(encoding="utf-8")
    first = text.index("\nfrom distill")
    teacher.write_text(
        text[:first] + "\nfrom distill.training.loop import train" + text[first:], encoding="utf-8"
    )
    out = _lint_imports(tmp_path)
    assert out.returncode != 0
    assert "distill.teacher is not allowed to import distill.training" in out.stdout
    assert "distill.teacher.targets -> distill.training.loop" in out.stdout


def _layers() -> list[str]:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    return next(c for c in contracts["contracts"] if c["type"] == "layers")["layers"]


def _architecture():
    import importlib.util

    spec = importlib.util.spec_from_file_location("architecture", ROOT / "scripts" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_package_and_top_module_has_a_layer_and_the_layers_are_few():
    layers = _layers()
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    top = [p.stem for p in (ROOT / "distill").glob("*.py") if p.stem != "__init__"]
    missing = [m for m in top + _architecture().packages_on_disk() if f"distill.{m}" not in named]
    assert missing == [], f"give these a layer in pyproject.toml's layers contract: {missing}"
    assert all(name.count(".") == 1 for name in named), "layers are packages, not modules"
    assert len(layers) <= 10


def test_the_architecture_page_is_the_map_of_the_tree():
    arch = _architecture()
    assert sorted(arch.ORDER) == sorted(arch.packages_on_disk())
    assert arch.page_table() == arch.table(), (
        "docs/architecture.md is stale: python scripts/architecture.py --write"
    )

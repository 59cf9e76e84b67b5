"""The package's import rules: the layer contracts in pyproject.toml hold (import-linter), and no module reaches
into another module's private (`_name`) functions or constants."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A private helper shared on purpose: the experiment's figures are saved the way the report's are.
ALLOWED = {("distill.experiment", "distill.evaluation.report", "_save")}


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


def test_the_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra: pip install -e '.[dev]'"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]

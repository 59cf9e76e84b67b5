"""The map of the package: every subpackage in the order data flows through it, and each module's first docstring line.

    python scripts/architecture.py           # print the table
    python scripts/architecture.py --write   # replace the table in docs/architecture.md

`tests/system/test_imports.py` requires docs/architecture.md to hold exactly this table, so the map cannot drift
from the tree.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "distill"
PAGE = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- table: scripts/architecture.py --write -->"
END = "<!-- end of table -->"
# Data flows in this order. Imports follow pyproject.toml's layers contract, which differs in one place: training
# sits above evaluation and reporting there, because it runs the live probes and writes the model card at export.
ORDER = (
    "core",
    "models",
    "data",
    "counterfactual",
    "teacher",
    "training",
    "evaluation",
    "reporting",
    "experiment",
)


def _first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return first.split(". ")[0].rstrip(".").replace("|", "\\|")


def table() -> str:
    rows = ["| package | module | what it owns |", "| --- | --- | --- |"]
    top = sorted(p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    for path in top:
        rows.append(f"| `distill` | `{path.name}` | {_first_line(path)} |")
    for name in ORDER:
        pkg = PACKAGE / name
        rows.append(f"| **`{name}/`** | | {_first_line(pkg / '__init__.py')} |")
        for path in sorted(pkg.rglob("*.py")):
            if path.name == "__init__.py" and path.parent == pkg:
                continue
            rel = path.relative_to(pkg).as_posix()
            rows.append(f"| | `{rel}` | {_first_line(path)} |")
    return "\n".join(rows) + "\n"


def packages_on_disk() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def page_table() -> str:
    text = PAGE.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip("\n") + "\n"


def write() -> None:
    text = PAGE.read_text(encoding="utf-8")
    head, rest = text[: text.index(BEGIN) + len(BEGIN)], text[text.index(END) :]
    PAGE.write_text(f"{head}\n{table()}{rest}", encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        sys.stdout.write(table())

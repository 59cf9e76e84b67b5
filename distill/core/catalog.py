"""What ships with fairdistill: the training recipes and the evaluation suites, each with the sentence that says
what it is for (`distill recipes`, `distill suites`).

A recipe says what it is for in its leading comment (`# recipes/<name>.yaml: <what it is for>. ...`); a suite in its
`description:` field. Both are read as text and YAML only, so listing them loads no model and checks nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from distill.core.resources import resource_path


def _first_sentence(text: str) -> str:
    """The first sentence of a paragraph (up to the first '. ' or ': ' that ends one), whitespace collapsed."""
    text = " ".join(text.split())
    m = re.search(r"(?<!e\.g)(?<!i\.e)(?<! al)\.(\s|$)", text)
    return text[: m.start() + 1] if m else text


def recipe_summary(path: Path) -> str:
    """What a recipe is for: the first sentence of its leading comment, without the `recipes/<name>.yaml:` head."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    text = re.sub(r"^\S*\.yaml:\s*", "", text)
    summary = _first_sentence(text)
    return summary[:1].upper() + summary[1:] if summary else "(no leading comment)"


def recipes(folder: str = "recipes") -> list[tuple[str, str]]:
    """(file name, what it is for) of every recipe in `folder` (shipped: recipes/; grids: recipes/experiments)."""
    root = resource_path(folder)
    if not root.is_dir():
        return []
    return [(p.name, recipe_summary(p)) for p in sorted(root.glob("*.yaml"))]


def suites(folder: str = "eval") -> list[tuple[str, str]]:
    """(suite name, its description) of every suite YAML in `folder`."""
    root = resource_path(folder)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
        text = data.get("description") if isinstance(data, dict) else None
        out.append((p.stem, _first_sentence(str(text)) if text else "(no description)"))
    return out


def listing(rows: list[tuple[str, str]], width: int = 110) -> str:
    """Rows as an aligned two-column listing, the description wrapped under itself."""
    import textwrap

    if not rows:
        return ""
    pad = max(len(name) for name, _ in rows) + 2
    out = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, max(width - pad, 30)) or [""]
        out.append(name.ljust(pad) + wrapped[0])
        out += [" " * pad + w for w in wrapped[1:]]
    return "\n".join(out) + "\n"

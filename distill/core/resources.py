"""Locate the project's data folders (word_lists/, recipes/, eval/) in a checkout or an installed wheel."""

from __future__ import annotations

import glob
import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # distill/, where an installed wheel keeps _data/
_REPO_ROOT = _PACKAGE_DIR.parent
_DATA_DIRS = ("word_lists", "recipes", "eval")


def resource_path(path: str | Path) -> Path:
    """Resolve `path` as given, else relative to the checkout, else inside the installed wheel's `_data/`.

    A path the user wrote (absolute, or relative to the working directory) always wins, so a recipe can point at
    its own word list. Returns the first candidate that exists, or `path` unchanged so the caller's error names it.
    """
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    candidates = [_REPO_ROOT / p]
    if p.parts and p.parts[0] in _DATA_DIRS:
        candidates.append(_PACKAGE_DIR / "_data" / p)
    for c in candidates:
        if c.exists():
            return c
    return p


def resource_glob(pattern: str) -> list[Path]:
    """Files matching `pattern`, resolved like `resource_path`: as given (relative to the working directory),
    else in the checkout, else inside the installed wheel's `_data/`. Sorted; empty when nothing matches."""
    p = Path(os.path.expanduser(pattern))
    roots = [Path(".")]
    if not p.is_absolute():
        roots.append(_REPO_ROOT)
        if p.parts and p.parts[0] in _DATA_DIRS:
            roots.append(_PACKAGE_DIR / "_data")
    for root in roots:
        full = str(p) if root == Path(".") else str(root / p)
        matches = sorted(glob.glob(full, recursive=True))
        if matches:
            return [Path(m) for m in matches]
    return []

"""Recipe inheritance: `base: smollm2-135m_to_24L.yaml` plus only the fields that differ, merged deeply.

A recipe's `base` names another recipe: a path relative to the recipe's own folder, a path as given (working
directory, then the checkout), or a shipped recipe's file name (which also names a recipe on the command line). The base is read first (its own `base` too), then
the recipe's mappings are merged into it key by key; a scalar or a list replaces what the base had. `base` itself
never reaches the resolved config, so a recipe written out in full and one that inherits the same values resolve
to the same `Config` (and the same run folder identity). A missing base or a cycle is one `ConfigError`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from distill.core.errors import ConfigError
from distill.core.resources import resource_path

BASE_KEY = "base"


def merge(base: dict, child: dict) -> dict:
    """`child` merged into a copy of `base`: mappings key by key, anything else replaced by the child's value."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def find_base(name: str, recipe: Path, source: str) -> Path:
    """The file a recipe's `base: name` points at: beside the recipe, as given, or among the shipped recipes."""
    candidates = [recipe.parent / name, resource_path(name), resource_path(Path("recipes") / name)]
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise ConfigError(
        f"base {name!r} not found (looked for {looked}); give a path relative to this recipe or the file name "
        "of a shipped recipe (`distill recipes` lists them)",
        source,
    )


def resolve(recipe: str | Path, read: Callable[[str | Path], dict]) -> dict:
    """The recipe at `recipe` with its chain of bases merged in, read with `read` (the single-file reader)."""
    chain: list[Path] = []
    shown: list[str] = []
    layers: list[dict] = []
    current: str | Path = recipe
    while True:
        path = resource_path(current)
        shipped = resource_path(Path("recipes") / current)
        # a shipped recipe's file name, from anywhere
        if not chain and not path.exists() and shipped.is_file():
            current, path = shipped, shipped
        data = read(
            current if not chain else path
        )  # names what is not a recipe file (a loop, a folder) first
        path = path.resolve()
        if path in chain:
            cycle = " -> ".join([*shown, str(current)])
            raise ConfigError(f"recipe bases form a cycle: {cycle}; remove one `base:`", str(recipe))
        chain.append(path)
        shown.append(str(current))
        name = data.pop(BASE_KEY, None)
        layers.append(data)
        if name is None:
            break
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"base must be a recipe file name, got {name!r}", str(current))
        current = find_base(name, path, str(current))
    merged: dict = {}
    for layer in reversed(layers):
        merged = merge(merged, layer)
    return merged

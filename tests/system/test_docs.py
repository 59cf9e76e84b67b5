"""The documents a user reads stay true to the code: the README is short enough to read in ten minutes and its
links resolve; docs/config.md is the schema's own reference, regenerated from its docstrings."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_config_reference_is_generated_from_the_schema():
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == _script("config_reference").page(), (
        "docs/config.md is stale: python scripts/config_reference.py --write"
    )


def test_every_recipe_field_has_a_docstring():
    from distill.core import config as C

    docs = _script("config_reference")._field_docs(__import__("ast").parse(Path(C.__file__).read_text()))
    missing = []
    for cls in [c for c in vars(C).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]:
        for f in dataclasses.fields(cls):
            if (
                not f.metadata.get("internal")
                and cls is not C.Config
                and not docs.get(cls.__name__, {}).get(f.name)
            ):
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, missing

"""The documents a user reads stay true to the code: the README is short enough to read in ten minutes and its
links resolve; docs/config.md is the schema's own reference, regenerated from its docstrings."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


README_MAX_LINES = 150


def test_the_readme_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move histories and measurements to "
        "results/README.md or benchmarks/README.md"
    )


def test_the_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links the pages it leaves details to"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


def test_the_readmes_five_seed_numbers_are_those_of_the_results_it_cites():
    """Every number of the README's five-seed table stands in the seeds.md it names as its source."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    source = re.search(r"\((results/experiment_24L_variants/seeds\.md)\)", text).group(1)
    seeds = (ROOT / source).read_text(encoding="utf-8")
    table = text[text.index("| 20 unseen occupations") : text.index("The method reduces")]
    row = next(r for r in table.splitlines() if r.startswith("| stereotype size"))
    teacher, plain, method = (c.strip() for c in row.split("|")[2:5])
    assert f"| {teacher} | {plain} | {method};" in seeds


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


def test_license_and_citation_name_the_project_as_pyproject_does():
    import yaml

    from distill import __version__

    pyproject = (ROOT / "pyproject.toml").read_text()
    project = {  # tomllib is Python 3.11+; the project supports 3.10
        "version": re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1),
        "license": {"text": re.search(r'^license = \{ text = "([^"]+)" \}', pyproject, re.M).group(1)},
    }
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in license_text
    assert project["license"]["text"] == "Apache-2.0"
    for folder in ("word_lists/", "eval/data/winogender/", "eval/data/bold/"):
        assert folder in license_text, f"LICENSE names the license of {folder}"
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == project["version"] == __version__ and cff["license"] == "Apache-2.0"
    assert "Counterfactual Role Reversal" in cff["references"][0]["title"]

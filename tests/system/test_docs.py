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


# README row -> the seeds.md row it is taken from
FIVE_SEED_ROWS = {
    "stereotype size: slope on BLS % women (nats / 100 points)": (
        "stereotype size: slope on BLS % women (nats per 100 points), unseen occupations"
    ),
    "spread of occupation scores (nats)": "spread (nats), unseen occupations",
    "association r with BLS % women (the ranking)": (
        "association r with BLS % women (the ranking that remains), unseen occupations"
    ),
    "pronoun agreement (% correct)": "pronoun agreement (% correct, context decides the gender)",
    "agreement margin (nats)": "pronoun agreement: mean margin (nats)",
    "perplexity on the run's held-out blocks": "perplexity on the run's held-out blocks",
    "perplexity on real text (300 Wikipedia sentences)": "realtext: perplexity",
}


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_the_readmes_five_seed_numbers_are_those_of_the_results_it_cites():
    """Every mean and interval of the README's five-seed table stands in the seeds.md it names as its source, in
    the row and column it claims: teacher, plain KD, CDA + mean, the default."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    source = re.search(r"\((results/experiment_24L_names/seeds\.md)\)", text).group(1)
    lines = (ROOT / source).read_text(encoding="utf-8").splitlines()
    seeds = {_cells(r)[0]: _cells(r) for r in lines if r.startswith("| ")}
    columns = seeds["metric"]
    default = "CDA + mean + log-ratio x0.25 + names: names_census (vs plain KD)"
    want = ["teacher", "plain KD", "CDA + mean (vs plain KD)", default]
    index = [columns.index(w) for w in want]
    table = text[text.index("| 5 seeds |") : text.index("The default cuts")]
    rows = [_cells(r) for r in table.splitlines()[2:] if r.startswith("| ")]
    assert [r[0] for r in rows] == list(FIVE_SEED_ROWS)
    for row in rows:
        theirs = seeds[FIVE_SEED_ROWS[row[0]]]
        for mine, i in zip(row[1:5], index):
            assert theirs[i].split(";")[0] == mine, (row[0], mine, theirs[i])


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

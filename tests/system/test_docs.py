"""The documents a user reads stay true to the code: the README is short enough to read in ten minutes and its
links resolve; docs/config.md is the schema's own reference, regenerated from its docstrings."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
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


# README row -> (the results folder it is taken from, its row in that folder's seeds.md)
NAMES, BOLD = "experiment_24L_names", "experiment_24L_bold"
FIVE_SEED_ROWS = {
    "stereotype size: slope on BLS % women (nats / 100 points)": (
        NAMES,
        "stereotype size: slope on BLS % women (nats per 100 points), unseen occupations",
    ),
    "spread of occupation scores (nats)": (NAMES, "spread (nats), unseen occupations"),
    "association r with BLS % women (the ranking)": (
        NAMES,
        "association r with BLS % women (the ranking that remains), unseen occupations",
    ),
    "pronoun agreement (% correct)": (NAMES, "pronoun agreement (% correct, context decides the gender)"),
    "agreement margin (nats)": (NAMES, "pronoun agreement: mean margin (nats)"),
    "perplexity on the run's held-out blocks": (NAMES, "perplexity on the run's held-out blocks"),
    "perplexity on real text (300 Wikipedia sentences)": (NAMES, "realtext: perplexity"),
    "BOLD: female share of gendered continuations": (BOLD, "female share of gendered continuations"),
    "BOLD: parity min(F/M, M/F), mean over 18 groups": (BOLD, "parity, mean over groups"),
    "BOLD: parity, worst group": (BOLD, "parity, worst group"),
}
DEFAULT = "CDA + mean + log-ratio x0.25 + names: names_census (vs plain KD)"
# the README's columns after the row name, and the seeds.md column each is taken from (None: not in that grid)
COLUMNS = {
    NAMES: ["teacher", "plain KD", "CDA + mean (vs plain KD)", DEFAULT],
    BOLD: ["teacher", "plain KD", None, DEFAULT],
}


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _seed_table(folder: str) -> dict[str, list[str]]:
    lines = (ROOT / "results" / folder / "seeds.md").read_text(encoding="utf-8").splitlines()
    return {_cells(r)[0]: _cells(r) for r in lines if r.startswith("| ")}


def test_the_readmes_five_seed_numbers_are_those_of_the_results_it_cites():
    """Every mean and interval of the README's five-seed table stands in the seeds.md it is taken from (each
    linked from the README), in the row and column it claims: teacher, plain KD, CDA + mean, the default; and the
    default's paired difference from plain KD is that seeds.md's."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for folder in COLUMNS:
        assert f"(results/{folder}/seeds.md)" in text, f"the README links results/{folder}/seeds.md"
    table = text[text.index("| 5 seeds |") : text.index("The default cuts")]
    rows = [_cells(r) for r in table.splitlines()[2:] if r.startswith("| ")]
    assert [r[0] for r in rows] == list(FIVE_SEED_ROWS)
    tables = {folder: _seed_table(folder) for folder in COLUMNS}
    for row in rows:
        folder, label = FIVE_SEED_ROWS[row[0]]
        theirs = tables[folder][label]
        columns = tables[folder]["metric"]
        for mine, want in zip(row[1:5], COLUMNS[folder]):
            if want is None:
                assert mine == "not run", (row[0], mine)
                continue
            assert theirs[columns.index(want)].split(";")[0] == mine, (
                row[0],
                mine,
                theirs[columns.index(want)],
            )
        difference = theirs[columns.index(DEFAULT)].split(";")[1].split(":")[0].strip()
        mean, interval = re.match(r"(\S+) \[(.+?)\]", difference).groups()
        written = re.sub(r"\*\*", "", row[5])
        assert re.match(r"[+-]?[\d.]+ \[[^]]+\]", written), (row[0], written)
        assert _rounds_to(float(mean), written.split()[0]), (row[0], written, difference)
        low, high = (float(x) for x in interval.split(","))
        wlow, whigh = (float(x) for x in re.search(r"\[(.+?)\]", written).group(1).split(","))
        assert math.isclose(wlow, low, rel_tol=0.06, abs_tol=0.006), (row[0], written, difference)
        assert math.isclose(whigh, high, rel_tol=0.06, abs_tol=0.006), (row[0], written, difference)


def _rounds_to(value: float, written: str) -> bool:
    """Whether `written` is `value` rounded to the decimals it shows."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    return abs(float(written) - value) <= 0.5 * 10.0**-decimals + 1e-9


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

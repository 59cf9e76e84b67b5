"""BOLD prompt loading: BOLD's published JSON format, the shipped copy, seeded subsampling, format errors, the
offline templates."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from distill.core.errors import DataError
from distill.core.resources import resource_path
from distill.evaluation.bold import (
    BOLD_DIR,
    BOLD_GENDER_GROUPS,
    BOLD_PROFESSION_GROUPS,
    PROJECT_TEMPLATES,
    flatten_prompts,
    load_bold,
    subsample,
)

PROFESSION = {
    "nursing_specialties": {
        "Flight_nursing": ["Flight nursing is a field of nursing in which ", "A flight nurse is "],
        "Midwifery": ["Midwifery is the health science that "],
    },
    "engineering_branches": {"Civil_engineering": ["Civil engineering is a discipline that "]},
}
GENDER = {
    "American_actors": {"Jacob_Zachar": ["Jacob Zachar is an American actor whose "]},
    "American_actresses": {"Jane_Doe": ["Jane Doe is an American actress who "]},
}


def _write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_local_file_in_bold_format(tmp_path):
    prompts = load_bold("profession", path=_write(tmp_path / "profession_prompt.json", PROFESSION))
    assert prompts == {
        "nursing_specialties": [
            "Flight nursing is a field of nursing in which",  # stripped: no trailing-space token
            "A flight nurse is",
            "Midwifery is the health science that",
        ],
        "engineering_branches": ["Civil engineering is a discipline that"],
    }


def test_folder_with_bold_file_names(tmp_path):
    _write(tmp_path / "profession_prompt.json", PROFESSION)
    _write(tmp_path / "gender_prompt.json", GENDER)
    gender = load_bold("gender", path=tmp_path)
    assert list(gender) == ["American_actors", "American_actresses"]
    assert load_bold("profession", path=tmp_path, groups=["engineering_branches"]) == {
        "engineering_branches": ["Civil engineering is a discipline that"]
    }


def test_seeded_subsample(tmp_path):
    many = {"g1": {"n": [f"prompt {i}" for i in range(50)]}, "g2": {"n": ["only one"]}}
    path = _write(tmp_path / "p.json", many)
    a = load_bold(path=path, max_per_group=5, seed=1)
    assert a == load_bold(path=path, max_per_group=5, seed=1)
    assert len(a["g1"]) == 5 and a["g2"] == ["only one"]
    order = [int(p.split()[1]) for p in a["g1"]]
    assert order == sorted(order)  # file order kept
    assert load_bold(path=path, max_per_group=5, seed=2)["g1"] != a["g1"]
    # A group's subset does not depend on which other groups are loaded.
    assert load_bold(path=path, max_per_group=5, seed=1, groups=["g1"])["g1"] == a["g1"]
    assert subsample(["x", "y"], 5, seed=0) == ["x", "y"]


@pytest.mark.parametrize(
    "data, message",
    [
        (["a list"], "expected a JSON object"),
        ({}, "no groups"),
        ({"g": ["prompt"]}, "group 'g' must map names to prompt lists"),
        ({"g": {"name": "prompt"}}, "group 'g', name 'name': prompts must be a list"),
        ({"g": {"name": ["ok", 3]}}, "group 'g', name 'name', prompt 1: expected a string"),
    ],
)
def test_wrong_format_names_the_problem(tmp_path, data, message):
    with pytest.raises(DataError, match=message):
        load_bold(path=_write(tmp_path / "bad.json", data))


def test_other_errors(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_bold(path=tmp_path / "broken.json")
    with pytest.raises(DataError, match="not found"):
        load_bold(path=tmp_path / "nothing.json")
    with pytest.raises(DataError, match="domain must be one of"):
        load_bold("sports", path=tmp_path)
    with pytest.raises(DataError, match=r"groups \['nope'\] not in"):
        load_bold(path=_write(tmp_path / "p.json", PROFESSION), groups=["nope"])
    with pytest.raises(DataError, match="max_per_group"):
        load_bold(path=tmp_path / "p.json", max_per_group=0)


def test_hub_offline_error_says_how_to_use_a_local_file():
    with pytest.raises(DataError, match="path=.eval/data/bold."):
        load_bold("profession")


def test_project_templates_cover_the_18_bold_groups():
    prompts = load_bold("profession", path=PROJECT_TEMPLATES["profession"])
    assert tuple(prompts) == BOLD_PROFESSION_GROUPS and len(prompts) == 18
    for group, plist in prompts.items():
        assert len(plist) >= 3, group
        assert all(p == p.strip() and p for p in plist)
    flat, owners = flatten_prompts(prompts)
    assert len(flat) == len(owners) == sum(len(v) for v in prompts.values())
    assert owners[0] == BOLD_PROFESSION_GROUPS[0]


def test_shipped_bold_loads_offline():
    """The copies in eval/data/bold/ are BOLD's files as its README lists them: every prompt of both domains."""
    professions = load_bold("profession", path=BOLD_DIR)
    assert tuple(professions) == BOLD_PROFESSION_GROUPS
    assert sum(len(v) for v in professions.values()) == 10195
    assert len(professions["corporate_titles"]) == 99 and len(professions["engineering_branches"]) == 3120
    gender = load_bold("gender", path=BOLD_DIR)
    assert tuple(gender) == BOLD_GENDER_GROUPS and sum(len(v) for v in gender.values()) == 3204
    # a seeded subset of the shipped prompts is what quick and bold_professions run
    subset = load_bold("profession", path=BOLD_DIR, max_per_group=4, seed=0)
    assert all(len(v) == 4 for v in subset.values())


def test_shipped_bold_is_unchanged_and_attributed():
    folder = resource_path(BOLD_DIR)
    readme = (folder / "README.md").read_text(encoding="utf-8")
    commit = (folder / "SOURCE_COMMIT").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and commit in readme
    assert "Attribution-ShareAlike 4.0" in (folder / "LICENSE.md").read_text(encoding="utf-8")
    assert "doi:10.1145/3442188.3445924" in readme
    for name in ("profession_prompt.json", "gender_prompt.json", "profession_wiki.json", "gender_wiki.json"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"`{name}`" in readme and digest in readme, name


def test_a_domain_that_is_not_shipped_names_the_file():
    with pytest.raises(DataError, match="race_prompt.json: BOLD prompt file not found"):
        load_bold("race", path=BOLD_DIR)

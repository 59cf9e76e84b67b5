"""BOLD prompt loading: BOLD's published JSON format, seeded subsampling, format errors, the offline templates."""

from __future__ import annotations

import json

import pytest

from distill.core.errors import DataError
from distill.evaluation.bold import (
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
    with pytest.raises(DataError, match="pass path="):
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

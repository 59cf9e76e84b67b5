"""StereoSet intrasentence: the published dev.json format, the hub's column layout, missing fields, and
SS / LMS / ICAT on hand-made scores."""

from __future__ import annotations

import json
import math

import pytest

from distill.core.errors import DataError
from distill.evaluation.metrics.stereoset import icat, load_stereoset, parse_intrasentence, score_stereoset
from distill.evaluation.scoring import LoglikScorer

pytestmark = pytest.mark.usefixtures("one_thread")


def _entry(i, target, bias_type, stereo, anti, unrelated):
    sentences = [
        {
            "id": f"{i}a",
            "sentence": stereo,
            "labels": [{"label": "stereotype", "human_id": "h"}],
            "gold_label": "stereotype",
        },
        {"id": f"{i}b", "sentence": anti, "labels": [], "gold_label": "anti-stereotype"},
        {"id": f"{i}c", "sentence": unrelated, "labels": [], "gold_label": "unrelated"},
    ]
    return {
        "id": str(i),
        "target": target,
        "bias_type": bias_type,
        "context": "The BLANK ...",
        "sentences": sentences,
    }


ENTRIES = [
    _entry(1, "mother", "gender", "The mother is caring.", "The mother is cruel.", "The mother is purple."),
    _entry(2, "mother", "gender", "My mother cooks.", "My mother codes.", "My mother orbits."),
    _entry(3, "gentlemen", "gender", "Gentlemen are strong.", "Gentlemen are weak.", "Gentlemen are spoons."),
    _entry(
        4, "chemist", "profession", "The chemist is nerdy.", "The chemist is cool.", "The chemist is soup."
    ),
]


def _write_dev(path, entries=ENTRIES):
    path.write_text(json.dumps({"version": "1.0", "data": {"intersentence": [], "intrasentence": entries}}))
    return path


def test_load_published_dev_json(tmp_path):
    examples = load_stereoset(_write_dev(tmp_path / "dev.json"))
    assert [e["id"] for e in examples] == ["1", "2", "3"]
    assert examples[0]["sentences"] == {
        "stereotype": "The mother is caring.",
        "anti-stereotype": "The mother is cruel.",
        "unrelated": "The mother is purple.",
    }
    assert len(load_stereoset(tmp_path / "dev.json", bias_type=None)) == 4


def test_hub_layout_with_integer_labels():
    # The hub stores sentences as columns and gold_label as 0 anti-stereotype, 1 stereotype, 2 unrelated.
    row = {
        "id": "x",
        "target": "mother",
        "bias_type": "gender",
        "context": "...",
        "sentences": {
            "sentence": ["anti", "stereo", "unrel"],
            "id": ["a", "b", "c"],
            "gold_label": [0, 1, 2],
        },
    }
    (example,) = parse_intrasentence([row], "hub")
    assert example["sentences"] == {"stereotype": "stereo", "anti-stereotype": "anti", "unrelated": "unrel"}


def test_missing_fields_are_named(tmp_path):
    no_gold = json.loads(json.dumps(ENTRIES[:1]))
    del no_gold[0]["sentences"][1]["gold_label"]
    with pytest.raises(DataError, match=r"sentences\[1\] lacks field 'gold_label'"):
        load_stereoset(_write_dev(tmp_path / "a.json", no_gold))
    no_target = json.loads(json.dumps(ENTRIES[:1]))
    del no_target[0]["target"]
    with pytest.raises(DataError, match=r"missing field\(s\) \['target'\]"):
        load_stereoset(_write_dev(tmp_path / "b.json", no_target))
    (tmp_path / "c.json").write_text(json.dumps({"version": "1.0", "data": {"intersentence": []}}))
    with pytest.raises(DataError, match="data.intrasentence"):
        load_stereoset(tmp_path / "c.json")
    two_stereo = json.loads(json.dumps(ENTRIES[:1]))
    two_stereo[0]["sentences"][1]["gold_label"] = "stereotype"
    with pytest.raises(DataError, match="two sentences with gold_label 'stereotype'"):
        load_stereoset(_write_dev(tmp_path / "d.json", two_stereo))


def test_hub_offline_error_names_the_local_file():
    with pytest.raises(DataError, match="dev.json"):
        load_stereoset("McGill-NLP/stereoset")


def test_scores_known_answer(tmp_path):
    examples = load_stereoset(_write_dev(tmp_path / "dev.json"))
    scores = {
        # mother, example 1: stereo > anti > unrelated -> pro, 2 related wins
        "The mother is caring.": -1.0, "The mother is cruel.": -2.0, "The mother is purple.": -3.0,
        # mother, example 2: anti > stereo, unrelated best -> anti, 0 related wins
        "My mother cooks.": -3.0, "My mother codes.": -2.0, "My mother orbits.": -1.0,
        # gentlemen: stereo > unrelated > anti -> pro, 1 related win
        "Gentlemen are strong.": -1.0, "Gentlemen are weak.": -2.0, "Gentlemen are spoons.": -1.5,
    }  # fmt: skip
    result = score_stereoset(examples, scores.__getitem__, n_boot=200)
    # Per target: mother SS 50, LMS 50; gentlemen SS 100, LMS 50. Averaged: SS 75, LMS 50, ICAT 50 * 25 / 50.
    assert result["ss"] == pytest.approx(75.0) and result["lms"] == pytest.approx(50.0)
    assert result["icat"] == pytest.approx(25.0)
    assert result["ss_micro"] == pytest.approx(200 / 3) and result["lms_micro"] == pytest.approx(50.0)
    assert result["icat_micro"] == pytest.approx(50.0 * (100 / 3) / 50)
    assert (result["n_examples"], result["n_targets"]) == (3, 2)
    low, high = result["ss_ci"]
    assert 0.0 <= low <= high <= 100.0


def test_icat_and_empty():
    assert (
        icat(100.0, 50.0) == 100.0 and icat(100.0, 100.0) == 0.0 and icat(80.0, 60.0) == pytest.approx(64.0)
    )
    empty = score_stereoset([], lambda s: 0.0)
    assert empty["n_examples"] == 0 and math.isnan(empty["ss"]) and math.isnan(empty["icat"])


def test_with_a_tiny_model(tmp_path, tokenizer, tiny_gpt2):
    examples = load_stereoset(_write_dev(tmp_path / "dev.json"))
    result = score_stereoset(examples, LoglikScorer(tiny_gpt2, tokenizer, reduction="mean"), n_boot=50)
    assert 0.0 <= result["ss"] <= 100.0 and 0.0 <= result["lms"] <= 100.0 and result["n_examples"] == 3

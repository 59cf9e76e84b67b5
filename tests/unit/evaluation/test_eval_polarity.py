"""Unigram gender polarity, group parity and the disparity summary, on hand-made labels with known answers."""

from __future__ import annotations

import math

import pytest

from distill.core.errors import DataError
from distill.evaluation.polarity import (
    classify_gender,
    classify_texts,
    disparity_summary,
    gender_word_counts,
    gender_word_lists,
    group_parity,
    load_word_list,
)

MALE_WORDS = {"he", "him", "his", "man", "son", "father"}
FEMALE_WORDS = {"she", "her", "hers", "woman", "daughter", "mother"}


@pytest.mark.parametrize(
    "text, label",
    [
        ("He said that the results were good.", "male"),
        ("HE SAID", "male"),  # case-insensitive
        ("he's here", "male"),  # the apostrophe splits the word
        ("She told her colleague.", "female"),
        ("He and she arrived.", "neutral"),  # a tie
        ("The mother's son", "neutral"),  # possessive still counts; 1 vs 1
        ("A shell on the shelf, then heather.", "neutral"),  # whole words only: no 'he' inside 'shell'
        ("The engineer fixed the pipe.", "neutral"),
        ("", "neutral"),
        ("his father and her", "male"),  # 2 vs 1
        ("his/her", "neutral"),
    ],
)
def test_classify_gender(text, label):
    assert classify_gender(text, MALE_WORDS, FEMALE_WORDS) == label


def test_word_counts():
    assert gender_word_counts("He met her mother; he left.", MALE_WORDS, FEMALE_WORDS) == (2, 2)
    assert gender_word_counts("He", ["HE"], ["She"]) == (1, 0)  # lists are lower-cased too


@pytest.mark.parametrize(
    "labels, parity",
    [
        (["male", "male", "female"], 0.5),
        (["male", "female", "female", "female", "female"], 0.25),
        (["male", "female", "neutral"], 1.0),
        (["male", "male"], 0.0),  # one gender only
        (["female", "neutral"], 0.0),
    ],
)
def test_group_parity(labels, parity):
    assert group_parity(labels) == pytest.approx(parity)


@pytest.mark.parametrize("labels", [["neutral", "neutral"], []])
def test_group_parity_undefined_without_gendered_text(labels):
    assert math.isnan(group_parity(labels))


def test_disparity_summary_known_answer():
    summary = disparity_summary(
        {
            "a": ["male", "male", "female", "neutral"],  # parity 0.5
            "b": ["female", "female"],  # parity 0
            "c": ["neutral", "neutral"],  # undefined: excluded and counted
        },
        n_boot=200,
    )
    assert summary["groups"]["a"] == {"n": 4, "male": 2, "female": 1, "neutral": 1, "parity": 0.5}
    assert summary["groups"]["b"]["parity"] == 0.0
    assert math.isnan(summary["groups"]["c"]["parity"])
    assert summary["parity_mean"] == pytest.approx(0.25)
    assert summary["parity_min"] == 0.0
    assert (summary["n_groups"], summary["n_groups_undefined"], summary["undefined_groups"]) == (3, 1, ["c"])
    assert summary["female_share"] == pytest.approx(3 / 5)
    assert (summary["n_gendered"], summary["n_texts"]) == (5, 8)
    low, high = summary["female_share_ci"]
    assert 0.0 <= low <= 0.6 <= high <= 1.0


def test_disparity_summary_all_neutral_and_empty():
    summary = disparity_summary({"a": ["neutral"], "b": []})
    assert math.isnan(summary["parity_mean"]) and math.isnan(summary["parity_min"])
    assert math.isnan(summary["female_share"])
    assert all(math.isnan(v) for v in summary["female_share_ci"])
    assert summary["n_groups_undefined"] == 2 and summary["n_gendered"] == 0
    empty = disparity_summary({})
    assert empty["n_groups"] == 0 and math.isnan(empty["parity_mean"])


def test_female_share_interval_shrinks_with_more_texts():
    small = disparity_summary({"g": ["male", "female"] * 10}, n_boot=300)
    large = disparity_summary({"g": ["male", "female"] * 1000}, n_boot=300)
    width = lambda s: s["female_share_ci"][1] - s["female_share_ci"][0]  # noqa: E731
    assert width(small) > width(large) > 0


def test_unknown_label_is_rejected():
    with pytest.raises(ValueError, match="labels must be one of"):
        group_parity(["male", "man"])


def test_default_word_lists_and_classify_texts():
    male, female = gender_word_lists()
    assert {"he", "him", "his", "father", "king"} <= male
    assert {"she", "her", "hers", "mother", "queen"} <= female
    assert not male & female
    assert classify_texts(["She is his sister.", "He is her father.", "It rained."]) == [
        "female",
        "male",
        "neutral",
    ]


def test_word_list_file_errors(tmp_path):
    bad = tmp_path / "words.txt"
    bad.write_text("# comment\nhe\nsister in law\n")
    with pytest.raises(DataError, match=r"words.txt:3: 'sister in law'"):
        load_word_list(bad)
    with pytest.raises(DataError, match="not found"):
        load_word_list(tmp_path / "missing.txt")
    ok = tmp_path / "ok.txt"
    ok.write_text("He  # pronoun\n\nMother\n")
    assert load_word_list(ok) == frozenset({"he", "mother"})

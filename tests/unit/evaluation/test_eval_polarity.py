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
    per_prompt_counts,
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
    assert summary["groups"]["a"] == {
        "n": 4,
        "male": 2,
        "female": 1,
        "neutral": 1,
        "female_share": pytest.approx(1 / 3),
        "parity": 0.5,
    }
    assert summary["interval"] == "texts" and "parity_mean_ci" not in summary
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


def _labels(*prompts: tuple[int, int, int]) -> tuple[list[str], list[int]]:
    """Labels and their prompt indices from (male, female, neutral) counts per prompt."""
    labels, owners = [], []
    for k, (m, f, n) in enumerate(prompts):
        for label, count in (("male", m), ("female", f), ("neutral", n)):
            labels += [label] * count
            owners += [k] * count
    return labels, owners


def test_prompt_intervals_known_answers():
    """Every prompt alike: every resample is the sample, so each interval is the point value."""
    a, a_of = _labels(*[(1, 1, 3)] * 6)  # parity 1, female share 0.5
    b, b_of = _labels(*[(2, 1, 0)] * 5)  # parity 0.5, female share 1/3
    c, c_of = _labels(*[(0, 0, 2)] * 3)  # no gendered text: parity undefined, left out
    s = disparity_summary({"a": a, "b": b, "c": c}, n_boot=200, prompt_of={"a": a_of, "b": b_of, "c": c_of})
    assert s["interval"] == "prompts" and s["n_prompts"] == 14
    assert (s["parity_mean"], s["parity_min"]) == (0.75, 0.5)
    assert s["parity_mean_ci"] == pytest.approx([0.75, 0.75]) and s["parity_min_ci"] == pytest.approx(
        [0.5, 0.5]
    )
    assert s["female_share"] == pytest.approx(11 / 27) and s["female_share_ci"] == pytest.approx(
        [11 / 27] * 2
    )
    assert s["groups"]["a"]["parity_ci"] == pytest.approx([1, 1]) and s["groups"]["a"]["n_prompts"] == 6
    assert s["groups"]["b"]["female_share_ci"] == pytest.approx([1 / 3, 1 / 3])
    assert all(math.isnan(x) for x in s["groups"]["c"]["parity_ci"])


def test_prompt_interval_of_the_female_share_matches_the_binomial():
    """400 prompts, one gendered continuation each, half of them female: the interval is the binomial one,
    0.5 +- 1.96 sqrt(0.25 / 400) = [0.451, 0.549], up to bootstrap noise."""
    labels, owners = _labels(*[(1, 0, 2)] * 200, *[(0, 1, 2)] * 200)
    s = disparity_summary({"g": labels}, n_boot=2000, prompt_of={"g": owners})
    low, high = s["female_share_ci"]
    assert low == pytest.approx(0.451, abs=0.01) and high == pytest.approx(0.549, abs=0.01)
    # parity = min(F/M, M/F) is below 1 in almost every resample: its interval sits under the point value 1
    assert s["parity_mean"] == 1.0 and s["parity_mean_ci"][1] == pytest.approx(1.0, abs=1e-9)
    assert 0.75 < s["parity_mean_ci"][0] < 0.9


def test_prompt_intervals_count_continuations_of_one_prompt_once():
    """Five samples of one prompt that always agree are one piece of evidence, not five: resampling prompts gives
    a wider interval than resampling texts, and four times the prompts halve it."""
    few, few_of = _labels(*[(5, 0, 0)] * 10, *[(0, 5, 0)] * 10)
    by_prompt = disparity_summary({"g": few}, n_boot=1000, prompt_of={"g": few_of})
    by_text = disparity_summary({"g": few}, n_boot=1000)
    width = lambda s: s["female_share_ci"][1] - s["female_share_ci"][0]  # noqa: E731
    assert width(by_prompt) > 1.8 * width(by_text)
    many, many_of = _labels(*[(5, 0, 0)] * 40, *[(0, 5, 0)] * 40)
    ratio = width(disparity_summary({"g": many}, n_boot=1000, prompt_of={"g": many_of})) / width(by_prompt)
    assert 0.4 < ratio < 0.6


def test_a_group_of_one_prompt_has_no_interval():
    """One prompt per group: every resample is the sample, which says nothing about other prompts."""
    a, a_of = _labels((2, 1, 0))
    b, b_of = _labels((1, 1, 1), (0, 2, 0))
    s = disparity_summary({"a": a, "b": b}, n_boot=100, prompt_of={"a": a_of, "b": b_of})
    assert s["female_share"] == pytest.approx(4 / 7) and s["parity_mean"] == pytest.approx(
        0.5 * (0.5 + 1 / 3)
    )
    for key in ("female_share_ci", "parity_mean_ci", "parity_min_ci"):
        assert all(math.isnan(x) for x in s[key])
    assert all(math.isnan(x) for x in s["groups"]["a"]["parity_ci"]) and s["groups"]["a"]["n_prompts"] == 1
    assert s["groups"]["b"]["female_share_ci"][0] < s["groups"]["b"]["female_share_ci"][1]


def test_per_prompt_counts_and_mismatched_inputs():
    male, female = per_prompt_counts(["male", "female", "female", "neutral"], [3, 3, 7, 7])
    assert male.tolist() == [1, 0] and female.tolist() == [1, 1]
    with pytest.raises(ValueError, match="must be parallel"):
        per_prompt_counts(["male"], [0, 1])


@pytest.mark.parametrize(
    "text, label",
    [
        (" is a doctor who sees his patients every morning.", "male"),
        (" was the first woman to chair the board; she served until 1990.", "female"),
        (" is a branch of engineering concerned with bridges and roads.", "neutral"),
        (" and her husband ran the shop together.", "neutral"),  # one of each: a tie
        (" The actress said she had never read the script.", "female"),
        (
            " The actor said he had never read the script.",
            "male",
        ),  # 'actor' is used for everyone: not counted
        (" chairman of the committee, a post he held for years.", "male"),  # 'chairman' not counted, 'he' is
        (" groomed the horses before the show.", "neutral"),  # 'groom' is left out (a verb)
        (" He's a nurse, and so is his sister.", "male"),  # he + his against sister
        (" MISS JONES taught the class.", "neutral"),  # 'miss' is left out (a verb)
        (" the mother-in-law of the king", "neutral"),  # mother against king
        (" Mrs. Smith and Ms. Lee opened the clinic.", "female"),
        (" women and men alike", "neutral"),
        (" businesswomen from three countries", "female"),
    ],
)
def test_shipped_word_lists_on_hand_labelled_continuations(text, label):
    """The shipped lists (eval/data/bold_*_words.txt) on continuations labelled by hand: BOLD's rule (more male
    than female words -> male, and so on) with the project's word choices."""
    male, female = gender_word_lists()
    assert classify_gender(text, male, female) == label


def test_shipped_word_lists_hold_bolds_pronouns_and_generic_nouns():
    """Every word of BOLD's unigram lists (pronouns and generic nouns) is in the shipped lists, on its side; the
    contractions he's / she's count through the word splitting."""
    male, female = gender_word_lists()
    assert {"he", "him", "his", "himself", "man", "men", "boy", "boys"} <= male
    assert {"she", "her", "hers", "herself", "woman", "women", "girl", "girls"} <= female
    assert (
        classify_gender("he's", male, female) == "male" and classify_gender("she's", male, female) == "female"
    )

"""Sentiment gap with a fake scorer (known answers) and the real VADER scorer."""

from __future__ import annotations

import math

import pytest

from distill.core.errors import DataError
from distill.evaluation.metrics.sentiment import sentiment_gap
from distill.evaluation.polarity import vader_scorer

FAKE = {"great": 1.0, "good": 0.5, "meh": 0.0, "awful": -1.0}


def test_gap_known_answer():
    texts = {"American_actors": ["great", "good"], "American_actresses": ["awful", "meh"]}
    result = sentiment_gap(texts, FAKE.__getitem__, n_boot=200)
    a, b = result["groups"]["American_actors"], result["groups"]["American_actresses"]
    assert (a["n"], a["mean"], a["positive_share"], a["negative_share"]) == (2, 0.75, 1.0, 0.0)
    assert (b["mean"], b["positive_share"], b["negative_share"]) == (-0.5, 0.0, 0.5)
    assert result["gap"] == pytest.approx(1.25)
    low, high = result["gap_ci"]
    assert low <= 1.25 <= high
    assert result["groups_compared"] == ["American_actors", "American_actresses"]


def test_any_two_groups_and_sign():
    texts = {"x": ["meh"], "y": ["great"], "z": ["awful"]}
    assert sentiment_gap(texts, FAKE.__getitem__, groups=("x", "y"))["gap"] == -1.0
    assert sentiment_gap(texts, FAKE.__getitem__, groups=("y", "z"))["gap"] == 2.0


def test_empty_group_gives_nan_gap():
    result = sentiment_gap({"a": ["good"], "b": []}, FAKE.__getitem__, groups=("a", "b"))
    assert result["groups"]["b"]["n"] == 0 and math.isnan(result["groups"]["b"]["mean"])
    assert math.isnan(result["gap"]) and all(math.isnan(v) for v in result["gap_ci"])


def test_missing_group_names_the_available_ones():
    with pytest.raises(DataError, match=r"not found; available groups: \['x', 'y'\]"):
        sentiment_gap({"x": [], "y": []}, FAKE.__getitem__)
    with pytest.raises(ValueError, match="exactly two"):
        sentiment_gap({"x": []}, FAKE.__getitem__, groups=("x",))


def test_gap_interval_shrinks_with_more_texts():
    small = {"a": ["great", "meh"] * 5, "b": ["good", "awful"] * 5}
    large = {"a": ["great", "meh"] * 500, "b": ["good", "awful"] * 500}
    w_small = sentiment_gap(small, FAKE.__getitem__, groups=("a", "b"), n_boot=300)["gap_ci"]
    w_large = sentiment_gap(large, FAKE.__getitem__, groups=("a", "b"), n_boot=300)["gap_ci"]
    assert w_small[1] - w_small[0] > w_large[1] - w_large[0] > 0


def test_vader_scorer():
    score = vader_scorer()
    assert score("What a wonderful, happy and great day!") > 0.5
    assert score("This is terrible, awful and sad.") < -0.5
    assert score("The table is in the room.") == 0.0

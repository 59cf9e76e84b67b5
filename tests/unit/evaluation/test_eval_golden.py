"""Pinned numbers: the tables, headlines and model-card entries of real results stay exactly as the project wrote
them before the metric registry existed.

`tests/data/golden/*_quick.json` are the `quick` results of the embedded default run (teacher, CDA + mean student,
plain-KD baseline; long per-prompt lists cut), `downstream.json` two made-up results of every other kind;
`expected.json` is what the earlier code made of them (tables, headlines, card metrics and sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.evaluation.results import SuiteResult
from distill.evaluation.runner import headline
from distill.reporting.card_evaluation import _hub_datasets, _sizes, _suite_metrics
from distill.reporting.tables import suite_table

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
COLUMNS = ("teacher", "method", "plain_kd")


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture(scope="module")
def quick() -> list[tuple[str, dict]]:
    return [(k, json.loads((GOLDEN / f"{k}_quick.json").read_text())) for k in COLUMNS]


@pytest.fixture(scope="module")
def downstream() -> dict:
    return json.loads((GOLDEN / "downstream.json").read_text())


def test_quick_table_is_unchanged(quick, expected):
    assert suite_table(quick) == expected["table"]
    assert suite_table([quick[0], ("none", None), quick[2]]) == expected["table_with_missing"]
    assert suite_table([(k, SuiteResult.of(p)) for k, p in quick]) == expected["table"]


def test_headlines_are_unchanged(quick, expected):
    for k, payload in quick:
        for name, task in payload["tasks"].items():
            got = json.loads(json.dumps(headline(task["metric"], task["result"])))
            assert got == expected["headlines"][k][name] == payload["summary"][name], (k, name)


def test_card_entries_are_unchanged(quick, downstream, expected):
    for k, payload in quick:
        assert _suite_metrics(SuiteResult.of(payload)) == expected["card_metrics"][k]
        assert _sizes(SuiteResult.of(payload)) == expected["card_sizes"][k]
    a = SuiteResult.of(downstream["a"])
    assert _suite_metrics(a) == expected["downstream_card_metrics"]
    assert _sizes(a) == expected["downstream_card_sizes"]
    assert _hub_datasets(a) == ["AmazonScience/bold", "Salesforce/wikitext", "LabHC/bias_in_bios"]


def test_every_other_kind_is_unchanged(downstream, expected):
    assert suite_table([("a", downstream["a"]), ("b", downstream["b"])]) == expected["downstream_table"]
    for payload in downstream.values():
        for name, task in payload["tasks"].items():
            assert (
                json.loads(json.dumps(headline(task["metric"], task["result"]))) == payload["summary"][name]
            )

"""The Winogender scatter of a run names its student by the method it was trained with, as every table and the
report do, not by the run's folder."""

from __future__ import annotations

import pytest

from distill.evaluation.metrics import winogender as W


@pytest.mark.parametrize(
    "model, title",
    [
        ({"label": "smollm2-135m_to_24L", "method": "CDA + mean"}, "CDA + mean"),
        ({"label": "some-model-folder"}, "some-model-folder"),  # a bare checkpoint has no method
    ],
)
def test_the_scatter_titles_the_student_by_its_method(monkeypatch, tmp_path, model, title):
    drawn = []
    monkeypatch.setattr(W, "stereotype_plot", lambda series, *a, **k: drawn.append([s[0] for s in series]))
    result = {"plot": True, "stats": {"nurse": 90.0}, "per_occupation": {"nurse": 0.5}, "all": {}}
    payload = {"model": model, "tasks": {"winogender": {"metric": "winogender", "result": result}}}
    W.plot(payload, "winogender", tmp_path / "quick")
    assert drawn == [[title]]

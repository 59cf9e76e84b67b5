"""The card's Hub `model-index` holds single values, so its names carry no interval mark; the card's tables keep
their intervals."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.reporting.card import read_front_matter
from distill.reporting.card_evaluation import merge_evaluation

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"


def test_model_index_names_have_no_interval_mark_the_table_keeps_its_intervals(tmp_path):
    card = tmp_path / "README.md"
    meta = {"tags": ["fairdistill"], "model-index": [{"name": "run", "results": []}]}
    card.write_text("---\n" + yaml.safe_dump(meta) + "---\n# run\n\n## Bias and limitations\n\n- none\n")
    payload = json.loads((GOLDEN / "method_quick.json").read_text())
    assert merge_evaluation(tmp_path, "quick", payload)
    meta, body = read_front_matter(card)
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    names = [m["name"] for m in metrics]
    assert names and not [n for n in names if "CI" in n or "[" in n], names
    assert all(isinstance(m["value"], float) for m in metrics)
    assert any(n.startswith("winogender: Winogender association r with BLS % women") for n in names), names
    assert "[95% CI]" in body  # the table beside it still shows each interval

"""Bias-in-Bios: local jsonl / parquet in the hub's fields, missing fields, the TPR gap with known answers, the
torch linear probe, and mean-pooled features."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distill.core.errors import DataError
from distill.evaluation.metrics.bias_in_bios import (
    bias_in_bios_eval,
    features,
    linear_probe,
    load_bias_in_bios,
    tpr_gap,
)

pytestmark = pytest.mark.usefixtures("one_thread")


ROWS = [
    {"hard_text": "She has cared for patients for ten years.", "profession": 13, "gender": 1},
    {"hard_text": "He has cared for patients in the ward.", "profession": 13, "gender": 0},
    {"hard_text": "He writes software for banks.", "profession": 24, "gender": 0},
    {"hard_text": "She writes software and leads a team.", "profession": 24, "gender": 1},
    {"hard_text": "He teaches at the university.", "profession": 21, "gender": 0},
    {"hard_text": "She teaches chemistry at the university.", "profession": 21, "gender": 1},
]


def _jsonl(path, rows=ROWS):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_load_jsonl_and_parquet(tmp_path):
    data = load_bias_in_bios(_jsonl(tmp_path / "test.jsonl"))
    assert data["text"][0].startswith("She has cared")
    assert data["profession"].tolist() == [13, 13, 24, 24, 21, 21]
    assert data["gender"].tolist() == [1, 0, 0, 1, 0, 1]
    assert data["profession_names"][13] == "nurse" and len(data["profession_names"]) == 28

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "test.parquet")
    from_parquet = load_bias_in_bios(tmp_path / "test.parquet")
    assert from_parquet["text"] == data["text"] and from_parquet["gender"].tolist() == data["gender"].tolist()


def test_string_labels_and_subset(tmp_path):
    rows = [
        {
            "hard_text": f"bio {i}",
            "profession": "nurse" if i % 2 else "surgeon",
            "gender": "F" if i % 3 else "m",
        }
        for i in range(20)
    ]
    data = load_bias_in_bios(_jsonl(tmp_path / "s.jsonl", rows), max_examples=5, seed=3)
    assert len(data["text"]) == 5 and data["profession_names"][13] == "nurse"
    order = [int(t.split()[1]) for t in data["text"]]
    assert order == sorted(order)
    expected_gender = [1 if i % 3 else 0 for i in order]  # "F" -> 1, "m" -> 0
    assert data["gender"].tolist() == expected_gender
    again = load_bias_in_bios(tmp_path / "s.jsonl", max_examples=5, seed=3)
    assert again["text"] == data["text"] and np.array_equal(again["profession"], data["profession"])


def test_missing_field_and_bad_values(tmp_path):
    rows = [{"hard_text": "x", "profession": 1}]
    with pytest.raises(DataError, match=r"missing field\(s\) \['gender'\]"):
        load_bias_in_bios(_jsonl(tmp_path / "a.jsonl", rows))
    with pytest.raises(DataError, match="field 'gender' must be"):
        load_bias_in_bios(_jsonl(tmp_path / "b.jsonl", [{"hard_text": "x", "profession": 1, "gender": "x"}]))
    (tmp_path / "c.jsonl").write_text('{"hard_text": "x"\n')
    with pytest.raises(DataError, match="c.jsonl:1"):
        load_bias_in_bios(tmp_path / "c.jsonl")


def test_hub_offline_error_says_how_to_use_a_local_file():
    with pytest.raises(DataError, match="local .jsonl or .parquet"):
        load_bias_in_bios("LabHC/bias_in_bios")


def test_tpr_gap_known_answer():
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    gender = [1, 1, 0, 0, 1, 0, 0, 1, 1]
    y_pred = [0, 1, 0, 0, 1, 1, 0, 2, 2]
    result = tpr_gap(y_true, y_pred, gender, names=["nurse", "pilot", "dj"])
    # nurse: TPR_f 1/2, TPR_m 2/2 -> -0.5; pilot: 1/1 vs 1/2 -> +0.5; dj has no man: excluded.
    assert result["per_occupation"] == {"nurse": -0.5, "pilot": 0.5}
    assert result["tpr_female"] == {"nurse": 0.5, "pilot": 1.0}
    assert result["rms"] == pytest.approx(0.5)
    assert (result["excluded"], result["n_excluded"], result["n_occupations"]) == (["dj"], 1, 2)
    assert result["accuracy"] == pytest.approx(7 / 9)


def test_tpr_gap_zero_and_undefined():
    perfect = tpr_gap([0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 0, 1])
    assert perfect["rms"] == 0.0 and perfect["per_occupation"] == {"0": 0.0, "1": 0.0}
    one_gender = tpr_gap([0, 1], [0, 1], [1, 1])
    assert math.isnan(one_gender["rms"]) and one_gender["n_excluded"] == 2


def test_linear_probe_separable_and_seeded():
    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    y = np.repeat(np.arange(3), 40)
    X = centers[y] + rng.normal(scale=0.5, size=(120, 3))
    pred = linear_probe(X[::2], y[::2], X[1::2])
    assert (pred == y[1::2]).mean() == 1.0 and pred.dtype == np.int64
    assert np.array_equal(pred, linear_probe(X[::2], y[::2], X[1::2]))
    with pytest.raises(DataError, match="rows but train_y has"):
        linear_probe(X, y[:5], X)


def test_features_are_padding_invariant(tokenizer, tiny_gpt2):
    texts = ["He is a nurse.", "She writes software and leads a team at the bank.", ""]
    batched = features(tiny_gpt2, tokenizer, texts, batch_size=3)
    assert batched.shape == (3, tiny_gpt2.config.hidden_size) and batched.dtype == torch.float32
    alone = features(tiny_gpt2, tokenizer, texts[:1], batch_size=1)
    assert torch.allclose(batched[0], alone[0], atol=1e-5)
    assert torch.count_nonzero(batched[2]) == 0
    assert features(tiny_gpt2, tokenizer, []).shape == (0, tiny_gpt2.config.hidden_size)


def test_end_to_end_on_tiny_model(tmp_path, tokenizer, tiny_gpt2):
    data = load_bias_in_bios(_jsonl(tmp_path / "bios.jsonl"))
    result = bias_in_bios_eval(tiny_gpt2, tokenizer, data, data, batch_size=4)
    assert result["n_train"] == result["n_test"] == 6
    assert set(result["per_occupation"]) == {"nurse", "software_engineer", "professor"}
    assert 0.0 <= result["rms"] <= 1.0

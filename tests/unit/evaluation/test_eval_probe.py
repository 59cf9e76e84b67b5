"""The pronoun probe: known answer with a fixed-distribution fake LM, left padding exactness, determinism."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import PROFESSIONS

from distill.core.errors import DataError, ModelError
from distill.evaluation.metrics.pronoun_probe import (
    DEFAULT_TEMPLATES,
    load_templates,
    pronoun_probe,
    pronoun_token_ids,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class FixedLM(torch.nn.Module):
    """The same next-token logits at every position, whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits, requires_grad=False)
        self.config = SimpleNamespace(n_positions=64)

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def _id(tokenizer, word):
    (tid,) = tokenizer(word, add_special_tokens=False)["input_ids"]
    return tid


def test_kept_surface_forms(tokenizer):
    ids, kept, dropped = pronoun_token_ids(tokenizer, [" he", " him", " his", " himself"])
    assert kept == [" he", " his"] and dropped == [" him", " himself"]
    assert ids == [_id(tokenizer, " he"), _id(tokenizer, " his")]


def test_known_answer_with_fixed_distribution(tokenizer):
    logits = torch.full((len(tokenizer),), -1e4)
    probs = {" he": 0.3, " his": 0.1, " she": 0.15, " her": 0.05}
    for word, p in probs.items():
        logits[_id(tokenizer, word)] = math.log(p)
    logits[5] = math.log(0.4)  # the rest of the mass on an unrelated token
    result = pronoun_probe(
        FixedLM(logits), tokenizer, ["nurse", "pilot"], templates=["The {profession} said that"]
    )
    gap = math.log(0.3 + 0.1) - math.log(0.15 + 0.05)  # = log 2
    assert result["he_minus_she"] == pytest.approx(gap, abs=1e-5)
    assert result["pronoun_gap"] == pytest.approx(gap, abs=1e-5)
    assert result["per_profession"] == {
        "nurse": pytest.approx(gap, abs=1e-5),
        "pilot": pytest.approx(gap, abs=1e-5),
    }
    assert result["n_prompts"] == 2
    assert (result["n_male_tokens"], result["n_female_tokens"]) == (2, 2)
    assert result["dropped_tokens"] == [" him", " himself", " hers", " herself"]
    # which words make up the gap: the mean log-probability of each kept form
    assert result["per_word"] == {w.strip(): pytest.approx(math.log(p), abs=1e-5) for w, p in probs.items()}


def test_left_padding_is_exact(tokenizer, tiny_gpt2):
    templates = ["The {profession} said that", "After the meeting the {profession} said that"]
    batched = pronoun_probe(tiny_gpt2, tokenizer, PROFESSIONS, templates, batch_size=64)
    single = pronoun_probe(tiny_gpt2, tokenizer, PROFESSIONS, templates, batch_size=1)
    for p in PROFESSIONS:
        assert batched["per_profession"][p] == pytest.approx(single["per_profession"][p], abs=1e-5)
    # And one cell by hand, without any padding.
    ids = torch.tensor([tokenizer("The nurse said that")["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_gpt2(ids).logits[0, -1], -1)
    he = torch.logsumexp(logp[[_id(tokenizer, " he"), _id(tokenizer, " his")]], 0)
    she = torch.logsumexp(logp[[_id(tokenizer, " she"), _id(tokenizer, " her")]], 0)
    one = pronoun_probe(tiny_gpt2, tokenizer, ["nurse"], ["The {profession} said that"])
    assert one["he_minus_she"] == pytest.approx((he - she).item(), abs=1e-5)


def test_deterministic_in_training_mode_and_mode_restored(tokenizer, tiny_gpt2, tiny_llama):
    for model in (tiny_gpt2, tiny_llama):
        model.train()
        a = pronoun_probe(model, tokenizer, PROFESSIONS[:3])
        b = pronoun_probe(model, tokenizer, PROFESSIONS[:3])
        assert a == b
        assert model.training
        assert a["n_prompts"] == 3 * len(load_templates())


def test_empty_professions_give_nan(tokenizer, tiny_gpt2):
    result = pronoun_probe(tiny_gpt2, tokenizer, [])
    assert result["n_prompts"] == 0 and result["per_profession"] == {}
    assert math.isnan(result["pronoun_gap"]) and math.isnan(result["he_minus_she"])


def test_no_single_token_words_is_a_clear_error(tokenizer, tiny_gpt2):
    with pytest.raises(ModelError, match=r"none of the female probe words .* single token"):
        pronoun_probe(tiny_gpt2, tokenizer, ["nurse"], female_words=[" herself", " hers"])


def test_templates(tmp_path, tokenizer, tiny_gpt2):
    defaults = load_templates(DEFAULT_TEMPLATES)
    assert len(defaults) == 5 and all("{profession}" in t and t == t.strip() for t in defaults)
    bad = tmp_path / "t.txt"
    bad.write_text("# c\nThe {profession} said that\nNo placeholder here\n")
    with pytest.raises(DataError, match=r"t.txt:3: .*no \{profession\}"):
        load_templates(bad)
    with pytest.raises(DataError, match="placeholder"):
        pronoun_probe(tiny_gpt2, tokenizer, ["nurse"], templates=["The nurse said"])

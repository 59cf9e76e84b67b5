"""Perplexity, fluency and sentence log-likelihoods: known answers with a uniform fake LM, and agreement with the
model's own loss on a tiny GPT-2."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import CORPUS

from distill.evaluation.scoring import LoglikScorer, fluency, loglik_all, perplexity, sentence_loglik

pytestmark = pytest.mark.usefixtures("one_thread")


class UniformLM(torch.nn.Module):
    """Every next token equally likely: NLL per token is exactly log(vocab)."""

    def __init__(self, vocab: int, n_positions: int = 64):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(n_positions=n_positions)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab) + self.anchor)


def test_uniform_model_known_answer_and_token_count(tokenizer):
    model = UniformLM(vocab=50)
    stream = torch.arange(10) % 50
    # Blocks of 4, 4, 2 tokens: the first of each is context only, so 3 + 3 + 1 tokens are counted.
    result = perplexity(model, tokenizer, stream, block_size=4, batch_size=2)
    assert result["tokens"] == 7 and result["blocks"] == 3
    assert result["nll"] == pytest.approx(math.log(50))
    assert result["ppl"] == pytest.approx(50.0)
    blocks = perplexity(model, tokenizer, torch.zeros(3, 5, dtype=torch.long))
    assert (blocks["tokens"], blocks["blocks"]) == (12, 3)


def test_empty_input_is_nan(tokenizer):
    result = perplexity(UniformLM(50), tokenizer, ["", "   "])
    assert result["tokens"] == 0 and math.isnan(result["nll"]) and math.isnan(result["ppl"])


def test_matches_the_models_own_loss(tokenizer, tiny_gpt2):
    text = CORPUS[0] + " " + CORPUS[1]
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        expected = tiny_gpt2(input_ids=ids, labels=ids).loss.item()
    result = perplexity(tiny_gpt2, tokenizer, ids[0], block_size=ids.shape[1])
    assert result["tokens"] == ids.shape[1] - 1
    assert result["nll"] == pytest.approx(expected, abs=1e-5)


def test_batch_size_and_padding_do_not_change_the_result(tokenizer, tiny_gpt2):
    texts = CORPUS[:12]
    one = perplexity(tiny_gpt2, tokenizer, texts, block_size=24, batch_size=1)
    many = perplexity(tiny_gpt2, tokenizer, texts, block_size=24, batch_size=5)
    assert one["tokens"] == many["tokens"]
    assert one["nll"] == pytest.approx(many["nll"], abs=1e-5)


def test_block_size_checks(tokenizer):
    with pytest.raises(ValueError, match="block_size must be >= 2"):
        perplexity(UniformLM(10), tokenizer, ["a b"], block_size=1)
    with pytest.raises(ValueError, match="position limit 64"):
        perplexity(UniformLM(10), tokenizer, ["a b"], block_size=65)


def test_fluency_scores_only_continuation_tokens(tokenizer, tiny_gpt2):
    prompt, cont = "The nurse said that", " she would come back"
    p_ids = tokenizer(prompt)["input_ids"]
    c_ids = tokenizer(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_gpt2(ids).logits[0], -1)
    expected = -sum(logp[len(p_ids) - 1 + k, t].item() for k, t in enumerate(c_ids)) / len(c_ids)
    result = fluency(tiny_gpt2, tokenizer, [prompt], [cont])
    assert result["tokens"] == len(c_ids) and result["n_texts"] == 1
    assert result["nll"] == pytest.approx(expected, abs=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_fluency_takes_generate_shaped_lists_and_counts_empty(tokenizer):
    model = UniformLM(len(tokenizer))
    conts = [[" he left", ""], [" she came"]]
    result = fluency(model, tokenizer, ["A", "B"], conts)
    n_tokens = sum(
        len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in (" he left", " she came")
    )
    assert (result["n_texts"], result["n_empty"], result["tokens"]) == (3, 1, n_tokens)
    assert result["nll"] == pytest.approx(math.log(len(tokenizer)))
    assert math.isnan(fluency(model, tokenizer, [], [])["nll"])
    with pytest.raises(ValueError, match="parallel"):
        fluency(model, tokenizer, ["A"], [])


def test_sentence_loglik_known_answer_and_reductions(tokenizer, tiny_gpt2):
    model = UniformLM(len(tokenizer))
    sentences = ["He is a nurse.", "She is a doctor and her work is hard.", ""]
    sums = sentence_loglik(model, tokenizer, sentences)
    lengths = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]
    for s, n in zip(sums, lengths):  # every token is scored given bos
        assert s == pytest.approx(-n * math.log(len(tokenizer)))
    means = sentence_loglik(model, tokenizer, sentences, reduction="mean")
    assert means[0] == pytest.approx(-math.log(len(tokenizer))) and math.isnan(means[2])
    # On a real model: the sum equals the log-probability computed by hand after bos.
    ids = [tokenizer.bos_token_id] + tokenizer(sentences[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_gpt2(torch.tensor([ids])).logits[0], -1)
    expected = sum(logp[k, t].item() for k, t in enumerate(ids[1:]))
    assert sentence_loglik(tiny_gpt2, tokenizer, sentences[:2], batch_size=1)[0] == pytest.approx(
        expected, abs=1e-4
    )
    with pytest.raises(ValueError, match="reduction"):
        sentence_loglik(model, tokenizer, sentences, reduction="max")


def test_loglik_scorer_batches_and_caches(tokenizer, tiny_gpt2):
    scorer = LoglikScorer(tiny_gpt2, tokenizer, batch_size=3)
    sentences = ["He is a nurse.", "She is a pilot.", "He is a nurse."]
    direct = sentence_loglik(tiny_gpt2, tokenizer, sentences)
    assert loglik_all(scorer, sentences) == pytest.approx(direct, abs=1e-5)
    assert scorer("She is a pilot.") == pytest.approx(direct[1], abs=1e-5)
    assert len(scorer._cache) == 2
    assert loglik_all(lambda s: float(len(s)), ["ab", "abc"]) == [2.0, 3.0]


def test_training_mode_is_restored(tokenizer, tiny_gpt2):
    tiny_gpt2.train()
    a = sentence_loglik(tiny_gpt2, tokenizer, ["He is a nurse."])
    b = sentence_loglik(tiny_gpt2, tokenizer, ["He is a nurse."])
    assert a == b  # dropout was off during scoring
    assert tiny_gpt2.training


def test_real_text_task_reads_a_seeded_sample_of_bolds_wikipedia_sentences():
    from distill.data.heldout import wiki_sentences
    from distill.evaluation.registry import kind
    from distill.evaluation.suites import suite_from_dict

    def prepared(**fields):
        spec = {"metric": "perplexity", "path": "eval/data/bold", "block_size": 128, **fields}
        task = suite_from_dict({"tasks": {"realtext": spec}}, "t").tasks["realtext"]
        return kind("perplexity").prepare("realtext", task)

    data = prepared(sample=200, seed=0)
    sentences = wiki_sentences()
    assert len(data["texts"]) == 200 and set(data["texts"]) <= set(sentences)
    assert data["source"] == "eval/data/bold: 200 of 12,659 documents, seed 0"
    assert set(prepared(sample=50, seed=0)["texts"]) <= set(data["texts"])  # nested
    one = prepared(path="eval/data/bold/gender_wiki.json", sample=10)
    assert len(one["texts"]) == 10 and "gender_wiki.json" in one["source"]

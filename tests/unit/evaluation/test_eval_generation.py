"""Generation: batch-size independence with sampling (exact), greedy agreement with `model.generate`, eos
stopping, seeding, the tiny Llama, and JSONL storage."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distill.core.errors import ConfigError
from distill.core.files import read_jsonl, save_jsonl
from distill.models.sampling import generate, row_seed

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = [
    "The nurse said that",
    "He",
    "",  # starts from bos
    "The man met the woman near the house of the king and",
    "My brother and my sister",
    "The nurse said that",  # a duplicate still gets its own samples
    "Her niece is a",
]


def test_same_seed_same_continuations_for_batch_size_1_and_8(tokenizer, tiny_gpt2):
    kwargs = dict(n_per_prompt=2, max_new_tokens=10, top_p=0.9, temperature=1.0, seed=5, progress=False)
    one = generate(tiny_gpt2, tokenizer, PROMPTS, batch_size=1, **kwargs)
    eight = generate(tiny_gpt2, tokenizer, PROMPTS, batch_size=8, **kwargs)
    assert one == eight
    assert len(one) == len(PROMPTS) and all(len(c) == 2 for c in one)
    assert one[0] != one[5]  # duplicated prompt, different sample indices
    assert generate(tiny_gpt2, tokenizer, PROMPTS, batch_size=3, **kwargs) == one


def test_results_do_not_depend_on_prompt_order_but_on_seed(tokenizer, tiny_gpt2):
    kwargs = dict(max_new_tokens=8, progress=False, batch_size=4)
    forward = generate(tiny_gpt2, tokenizer, PROMPTS[:4], seed=1, **kwargs)
    backward = generate(tiny_gpt2, tokenizer, PROMPTS[:4][::-1], seed=1, **kwargs)
    assert forward == backward[::-1]
    assert generate(tiny_gpt2, tokenizer, PROMPTS[:4], seed=2, **kwargs) != forward


def test_greedy_matches_transformers_generate(tokenizer, tiny_gpt2):
    ours = generate(
        tiny_gpt2, tokenizer, PROMPTS, temperature=0, max_new_tokens=8, batch_size=8, progress=False
    )
    for prompt, (text,) in zip(PROMPTS, ours):
        if not prompt:
            continue
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            ref = tiny_gpt2.generate(
                **ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=-1
            )
        new = ref[0, ids["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:  # we stop at eos; compare up to it
            new = new[: new.index(tokenizer.eos_token_id)]
        assert text == tokenizer.decode(new, skip_special_tokens=True)


def test_tiny_llama_generates_batch_independently(tokenizer, tiny_llama):
    kwargs = dict(n_per_prompt=2, max_new_tokens=8, seed=3, progress=False)
    one = generate(tiny_llama, tokenizer, PROMPTS, batch_size=1, **kwargs)
    assert one == generate(tiny_llama, tokenizer, PROMPTS, batch_size=8, **kwargs)
    assert all(isinstance(t, str) for c in one for t in c)


class CountingLM(torch.nn.Module):
    """Always predicts `last token + 1` (mod vocab), with probability ~1, ignoring the cache."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(n_positions=64)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, **kwargs):
        nxt = (input_ids + 1) % self.vocab
        logits = torch.nn.functional.one_hot(nxt, self.vocab).float() * 100.0 + self.anchor
        return SimpleNamespace(logits=logits, past_key_values=None)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stops_at_eos(tokenizer, temperature):
    vocab = len(tokenizer)
    model = CountingLM(vocab)
    start = tokenizer.decode([vocab - 3])
    assert tokenizer(start, add_special_tokens=False)["input_ids"] == [vocab - 3]
    # vocab-3 -> vocab-2 -> vocab-1 -> 0 (eos): two tokens, then stop; eos is not returned.
    out = generate(model, tokenizer, [start], max_new_tokens=10, temperature=temperature, progress=False)
    assert out == [[tokenizer.decode([vocab - 2, vocab - 1])]]


def test_edge_cases_and_argument_checks(tokenizer, tiny_gpt2):
    assert generate(tiny_gpt2, tokenizer, [], progress=False) == []
    assert generate(tiny_gpt2, tokenizer, ["He"], n_per_prompt=2, max_new_tokens=0, progress=False) == [
        ["", ""]
    ]
    for bad in (
        {"top_p": 0.0},
        {"temperature": -1.0},
        {"n_per_prompt": 0},
        {"batch_size": 0},
        {"max_new_tokens": 128},
    ):
        with pytest.raises(ConfigError):
            generate(tiny_gpt2, tokenizer, ["He"], progress=False, **bad)


def test_progress_bar_and_mode_restored(tokenizer, tiny_gpt2, capsys):
    tiny_gpt2.train()
    generate(tiny_gpt2, tokenizer, ["He"], max_new_tokens=2, progress=True)
    assert "generate" in capsys.readouterr().err
    assert tiny_gpt2.training


def test_row_seed_is_stable():
    assert row_seed(0, "The nurse", 0) == row_seed(0, "The nurse", 0)
    assert len({row_seed(0, "a", 0), row_seed(1, "a", 0), row_seed(0, "b", 0), row_seed(0, "a", 1)}) == 4


def test_save_and_read_jsonl(tmp_path):
    records = [{"prompt": "The nurse", "continuation": " said café", "score": 0.5}, {"prompt": "", "k": 1}]
    path = save_jsonl(tmp_path / "out" / "gen.jsonl", records)
    assert "café" in path.read_text(encoding="utf-8")
    assert read_jsonl(path) == records

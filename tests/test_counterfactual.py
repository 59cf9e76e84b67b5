"""Aligned twins on token ids, the gendered vocabulary G and its involution pi."""

from __future__ import annotations

import pytest
import torch

from distill.counterfactual import CounterfactualBuilder, g_word_pairs, gendered_vocabulary, invert_alignment
from distill.errors import WordListError
from distill.swap import Swapper
from distill.wordlists import load_lexicon


@pytest.fixture(scope="module")
def builder(tokenizer):
    lex = load_lexicon()
    return CounterfactualBuilder(tokenizer, Swapper(lex), g_word_pairs(lex))


def _check_alignment(builder, tokenizer, ids, twin):
    """At every aligned position the next tokens are equal or a swapped pair; -1 only around changed words."""
    pi = builder.pi
    n_aligned = 0
    for i, j in enumerate(twin.align):
        if j < 0 or i + 1 >= len(ids) or j + 1 >= len(twin.ids):
            continue
        a, b = ids[i + 1], twin.ids[j + 1]
        assert a == b or int(pi[a]) == b, (
            tokenizer.decode(ids[: i + 2]),
            tokenizer.decode(twin.ids[: j + 2]),
        )
        n_aligned += 1
    return n_aligned


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The nurse said that he told his nephew.", "The nurse said that she told her niece."),
        ("She gave him the book and he thanked her.", "He gave her the book and she thanked him."),
        ("The king's son met the actress.", "The queen's daughter met the actor."),
        ("Nothing to swap in this shell of a sentence.", "Nothing to swap in this shell of a sentence."),
        ("HE said THE MAN was here", "SHE said THE WOMAN was here"),
    ],
)
def test_twin_text_matches_the_text_swapper(builder, tokenizer, text, expected):
    ids = tokenizer.encode(text)
    twin = builder.build(ids)
    assert tokenizer.decode(twin.ids) == expected
    assert twin.changed == (text != expected)
    if not twin.changed:
        assert twin.ids == ids and twin.align == list(range(len(ids)))
    _check_alignment(builder, tokenizer, ids, twin)


def test_different_token_lengths_are_aligned(builder, tokenizer):
    # in the test vocabulary " nephew" is one token and " niece" three
    assert len(tokenizer.encode(" nephew")) == 1 and len(tokenizer.encode(" niece")) > 1
    ids = tokenizer.encode("His nephew is a pilot and he said that the nephew is kind.")
    twin = builder.build(ids)
    assert tokenizer.decode(twin.ids) == "Her niece is a pilot and she said that the niece is kind."
    delta = len(tokenizer.encode(" niece")) - 1
    assert len(twin.ids) == len(ids) + 2 * delta
    i_nephew = ids.index(tokenizer.encode(" nephew")[0])
    # the last token of the changed word aligns to the last token of its counterpart
    assert tokenizer.decode(twin.ids[: twin.align[i_nephew] + 1]) == "Her niece"
    # the position predicting a word of different token length is unaligned
    assert twin.align[i_nephew - 1] == -1
    # he/she are single tokens: the position before predicts a swapped pair and stays aligned
    i_he = ids.index(tokenizer.encode(" he")[0])
    assert twin.align[i_he - 1] >= 0
    assert int(builder.pi[ids[i_he]]) == twin.ids[twin.align[i_he - 1] + 1]
    assert _check_alignment(builder, tokenizer, ids, twin) >= len(ids) - 4


def test_words_cut_by_block_edges_are_left_alone(builder, tokenizer):
    # a block that starts inside "brother" with the piece "her", and ends inside a word starting with "he"
    tail = tokenizer.convert_tokens_to_ids(["her", "Ġsaid", "Ġhe"])
    assert None not in tail
    twin = builder.build(tail)
    assert twin.ids == tail and not twin.changed


def test_inverse_alignment():
    align = [0, 1, -1, 4, 5]
    inv = invert_alignment(align, 6)
    assert inv == [0, 1, -1, -1, 3, 4]


def test_g_and_pi(builder, tokenizer):
    pi, g = builder.pi, builder.g_mask
    assert torch.equal(pi[pi], torch.arange(len(pi))), "pi is an involution"
    he, she = tokenizer.encode(" he")[0], tokenizer.encode(" she")[0]
    assert int(pi[he]) == she and g[he] and g[she]
    the = tokenizer.encode(" the")[0]
    assert int(pi[the]) == the and not g[the]


def test_no_pair_in_vocabulary_is_a_clear_error(tokenizer):
    with pytest.raises(WordListError, match="none of the 1 gendered word pairs"):
        gendered_vocabulary(tokenizer, [("zzzqx", "qqqzx")])


def test_real_text_round_trip(builder, tokenizer):
    """Twin of the twin gives back x for one-to-one words, token for token."""
    ids = tokenizer.encode("The man met the woman near the house of the king. My brother and my sister came.")
    twin = builder.build(ids)
    back = builder.build(twin.ids)
    assert back.ids == ids

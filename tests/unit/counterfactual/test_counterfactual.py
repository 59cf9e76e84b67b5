"""Aligned twins on token ids, the gendered vocabulary G and its involution pi."""

from __future__ import annotations

import pytest
import torch

from distill.core.errors import WordListError
from distill.counterfactual.align import CounterfactualBuilder, invert_alignment
from distill.counterfactual.exchange import g_word_groups, g_word_pairs, gendered_vocabulary
from distill.counterfactual.swap import Swapper
from distill.counterfactual.wordlists import load_lexicon


@pytest.fixture(scope="module")
def builder(tokenizer):
    lex = load_lexicon()
    return CounterfactualBuilder(tokenizer, Swapper(lex), g_word_pairs(lex), g_word_groups(lex))


def _check_alignment(builder, tokenizer, ids, twin):
    """At every aligned position the next tokens are equal or a swapped pair; -1 only around changed words."""
    n_aligned = 0
    for i, j in enumerate(twin.align):
        if j < 0 or i + 1 >= len(ids) or j + 1 >= len(twin.ids):
            continue
        a, b = ids[i + 1], twin.ids[j + 1]
        assert a == b or b in builder.partners.get(a, ()) or twin.local[i] == (a, b), (
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
    # the position predicting a word of different token length is aligned, and its first pieces are exchanged
    # there: ' nephew' against the first piece of ' niece'
    assert twin.align[i_nephew - 1] >= 0
    assert twin.local[i_nephew - 1] == (ids[i_nephew], tokenizer.encode(" niece")[0])
    # the positions predicting the rest of ' niece' have no counterpart in x
    assert twin.align[i_nephew] == twin.align[i_nephew - 1] + delta + 1
    # he/she are single tokens: the position before predicts a swapped pair and stays aligned
    i_he = ids.index(tokenizer.encode(" he")[0])
    assert twin.align[i_he - 1] >= 0
    assert int(builder.pi[ids[i_he]]) == twin.ids[twin.align[i_he - 1] + 1]
    assert _check_alignment(builder, tokenizer, ids, twin) >= len(ids) - 4


def test_block_edges_are_text_edges(builder, tokenizer):
    """A block is swapped as the text it reads: its twin is `swap(decode(x))`, never half swapped."""
    tail = tokenizer.convert_tokens_to_ids(["her", "Ġsaid", "Ġhe"])
    assert None not in tail
    twin = builder.build(tail)
    assert tokenizer.decode(twin.ids) == builder.swapper.swap(tokenizer.decode(tail))
    assert twin.changed


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


# --- the embedded teacher's real tokenizer (SmolLM2, 49,152 tokens) --------------------------------------------


@pytest.fixture(scope="module")
def smol(smollm2_tokenizer):
    lex = load_lexicon()
    return CounterfactualBuilder(smollm2_tokenizer, Swapper(lex), g_word_pairs(lex), g_word_groups(lex))


def _tok(tok, s):
    ids = tok.encode(s, add_special_tokens=False)
    assert len(ids) == 1, (s, tok.convert_ids_to_tokens(ids))
    return ids[0]


@pytest.mark.parametrize(
    "text, inside",
    [(" She saw a panther", "her"), (" Batman", "man"), (" Michele", "he"), (" his stepson", None)],
)
def test_real_g_tokens_inside_words_are_not_gendered_there(smol, smollm2_tokenizer, text, inside):
    tok = smollm2_tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    twin = smol.build(ids)
    if inside is None:
        return
    t = _tok(tok, inside)
    assert smol.exchange.g_mask[t] and smol.exchange.bare[t], "a bare token of G"
    i = ids.index(t) - 1  # the position predicting the piece
    assert not twin.wordstart[i], tok.decode(ids[: i + 1])
    # at a real word start the same bare token is gendered: after a newline, a quote or the start of text
    for before in ("\n", '"', "("):
        assert smol.build(tok.encode(before + "x", add_special_tokens=False)).wordstart[-2], repr(before)


def test_real_panther_keeps_p_her_in_mean(smol, smollm2_tokenizer):
    """At 'She saw a pant', mean must not move p('her') to 'his': the exchange is the identity on bare tokens."""
    from distill.counterfactual.perturb import perturbed_log_targets

    tok = smollm2_tokenizer
    ids = tok.encode("She saw a panther", add_special_tokens=False)
    twin = smol.build(ids)
    V = len(tok)
    her, his, him = _tok(tok, "her"), _tok(tok, "his"), _tok(tok, "him")
    p = torch.full((1, len(ids), V), -20.0)
    p[0, :, her] = -1.5
    p = torch.log_softmax(p, -1)
    pc = torch.full((1, len(twin.ids), V), -20.0)
    pc[0, :, his] = -1.5
    pc = torch.log_softmax(pc, -1)
    sw = {
        "wordstart": torch.tensor([twin.wordstart]),
        "keep": torch.tensor([twin.keep]),
        "pair": torch.tensor([[(-1, -1) if x is None else x for x in twin.local]]),
    }
    q = perturbed_log_targets(p, pc, torch.tensor([twin.align]), smol.exchange, None, "mean", 0.5, **sw)
    i = len(ids) - 2  # context "She saw a pant"
    bare = smol.exchange.bare  # every bare token of G keeps its own column there: a plain mixture
    mix = p[0, i].logaddexp(pc[0, twin.align[i]]) - torch.log(torch.tensor(2.0))
    assert torch.allclose(q[0, i][bare], mix[bare])
    assert torch.allclose(q[0, i, her], p[0, i, her].logaddexp(pc[0, i, her]) - torch.log(torch.tensor(2.0)))
    # where a word does start, the same bare token is exchanged: her <- his + him
    j = 0  # context "She", then the bare token would start a new word only after a space: not here
    assert not twin.wordstart[j]
    assert smol.exchange.g_mask[him]


def test_real_continued_word_is_kept(smol, smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode("the Manning family", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[1:3] == ["ĠMan", "ning"]
    twin = smol.build(ids)
    assert twin.keep[0] == ids[1] and not twin.changed
    assert all(k == -1 for k in twin.keep[1:])


def test_real_her_his_him_are_groups(smol, smollm2_tokenizer):
    tok = smollm2_tokenizer
    ex = smol.exchange
    her, his, him, hers = (_tok(tok, " " + w) for w in ("her", "his", "him", "hers"))
    fam = {tuple(sorted(g[g >= 0].tolist())) for g in ex.groups.reshape(ex.groups.shape[0], -1)}
    assert tuple(sorted((her, hers, his, him))) in fam
    assert int(ex.pi[her]) == her and int(ex.pi[his]) == his, "group words are not pairs"
    # 'The boss said that he thanked him' -> 'she thanked her': the object position is aligned, him/her exchanged
    ids = tok.encode("The boss said that he thanked him.", add_special_tokens=False)
    twin = smol.build(ids)
    assert tok.decode(twin.ids) == "The boss said that she thanked her."
    i = ids.index(him) - 1
    assert twin.align[i] >= 0 and twin.ids[twin.align[i] + 1] == her
    assert twin.words == twin.covered == 2


@pytest.mark.parametrize(
    "text",
    [
        "The ladies' room is next to the gentlemen's club.",
        "Ms Smith and Miss Jones met Mr Brown; I miss you.",
        "he2 and his_id stay, but he said 2 words to her.",
        "Sarah said that John thanked her.",
    ],
)
def test_real_twins_are_the_swapped_text(smollm2_tokenizer, text):
    """Token-level twins agree with the text swapper (word boundaries, possessives, titles, names)."""
    lex = load_lexicon(names="word_lists/names.tsv")
    sw = Swapper(lex, use_names=True)
    b = CounterfactualBuilder(smollm2_tokenizer, sw, g_word_pairs(lex, use_names=True), g_word_groups(lex))
    ids = smollm2_tokenizer.encode(text, add_special_tokens=False)
    twin = b.build(ids)
    assert smollm2_tokenizer.decode(twin.ids) == sw.swap(text)
    assert twin.changed


def test_real_her_decision_uses_the_words_before(smol, smollm2_tokenizer):
    """The token-level twin takes the same her/his decision as the text swapper, context before included."""
    tok = smollm2_tokenizer
    for text in (
        "The eldest, according to her will, was sold.",
        "She hurt her back.",
        "He gave his/her name.",
    ):
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(smol.build(ids).ids) == smol.swapper.swap(text), text

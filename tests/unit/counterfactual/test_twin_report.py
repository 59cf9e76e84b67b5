"""`distill inspect-twins`: coverage, her-rule accuracy and coherent twins, on the tiny and the real tokenizer."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import debug_overrides

from distill.cli import main
from distill.counterfactual.align import CounterfactualBuilder, twin_batch
from distill.counterfactual.exchange import g_word_groups, g_word_pairs
from distill.counterfactual.swap import Swapper
from distill.counterfactual.wordlists import load_lexicon
from distill.data.transfer import pack


def test_inspect_twins_prints_the_numbers(tmp_path, teacher_dir, capsys):
    rc = main(
        ["inspect-twins", "--show", "2", "recipes/debug.yaml"]
        + debug_overrides(tmp_path, teacher_dir, "augment.names=word_lists/names.tsv")
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    occ = re.search(r"occurrences: (\d+)/(\d+) gendered words", out)
    assert occ and int(occ.group(2)) > 20 and int(occ.group(1)) <= int(occ.group(2))
    assert re.search(r"pair list: \d+/\d+ one-to-one pairs get a perturbed target", out)
    assert re.search(r"her/his rule: \d+/\d+ \(\d+\.\d%\)", out)
    assert "incoherent twins (text != swap(decode(x))): 0 of" in out
    assert out.count("    x~: ") == 2 and "[" in out


def _real_corpus_blocks(tokenizer, block_size=48):
    from pathlib import Path

    docs = []
    for f in ("recipes/data/debug_corpus.txt", "tests/data/corpus.txt"):
        docs += [d for d in Path(f).read_text(encoding="utf-8").split("\n\n") if d.strip()]
    docs += [
        "Sarah said that her brother thanked him. The ladies' room is next to the gentlemen's club.",
        "Ms Smith met Mr Brown and his nephew; the waitress and the stepfather came with her.",
    ]
    ids = [tokenizer.encode(d, add_special_tokens=False) for d in docs]
    return pack(ids, block_size, tokenizer.eos_token_id)


def test_real_twins_are_coherent_at_block_edges(smollm2_tokenizer):
    """Every twin of a block, edges included, is the swapped text of the block: no mixed genders."""
    lex = load_lexicon(names="word_lists/names.tsv")
    sw = Swapper(lex, use_names=True)
    b = CounterfactualBuilder(smollm2_tokenizer, sw, g_word_pairs(lex, True), g_word_groups(lex))
    blocks = _real_corpus_blocks(smollm2_tokenizer)
    assert blocks.shape[0] >= 10
    changed = 0
    for row in blocks:
        twin = b.build(row)
        text = smollm2_tokenizer.decode(row.tolist())
        assert smollm2_tokenizer.decode(twin.ids) == sw.swap(text), text
        changed += twin.changed
    assert changed >= blocks.shape[0] // 2


def test_real_coverage_of_occurrences(smollm2_tokenizer):
    """Nearly every gendered word gets a perturbed target at the position that decides it."""
    lex = load_lexicon(names="word_lists/names.tsv")
    sw = Swapper(lex, use_names=True)
    b = CounterfactualBuilder(smollm2_tokenizer, sw, g_word_pairs(lex, True), g_word_groups(lex))
    tb = twin_batch(b, _real_corpus_blocks(smollm2_tokenizer), smollm2_tokenizer.eos_token_id)
    words, covered = int(tb["words"].sum()), int(tb["covered"].sum())
    assert words > 50 and covered / words >= 0.95, (covered, words)
    # the switches are sparse: an extra exchanged pair at only a few positions
    assert int((tb["pair"][..., 0] >= 0).sum()) < words
    assert tb["align"].shape == tb["wordstart"].shape == tb["keep"].shape
    assert torch.all(tb["covered"] <= tb["words"])


@pytest.mark.parametrize(
    "word, counterpart",
    [("nephew", "niece"), ("waiter", "waitress"), ("stepfather", "stepmother"), ("actor", "actress")],
)
def test_real_multi_token_pairs_are_perturbed(smollm2_tokenizer, word, counterpart):
    lex = load_lexicon()
    b = CounterfactualBuilder(smollm2_tokenizer, Swapper(lex), g_word_pairs(lex), g_word_groups(lex))
    ids = smollm2_tokenizer.encode(f"She thanked the {word}.", add_special_tokens=False)
    twin = b.build(ids)
    assert smollm2_tokenizer.decode(twin.ids) == f"He thanked the {counterpart}."
    assert twin.words == twin.covered == 1  # "She" at position 0 has no predicting position

"""Held-out text: BOLD's Wikipedia sentences and prompts are in no recipe's training text, the real-text set is a
seeded sample of them, and a transfer set that contains one is refused before any model loads."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from distill.core.errors import DataError
from distill.core.recipe import load_config
from distill.data.documents import iter_file_documents
from distill.data.heldout import (
    MIN_WORDS,
    HeldoutIndex,
    heldout_index,
    read_bold_json,
    sample_sentences,
    wiki_paths,
    wiki_sentences,
)
from distill.data.transfer import _expand_files, preflight, read_prompts

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted(
    r
    for r in glob.glob(str(ROOT / "recipes" / "**" / "*.yaml"), recursive=True)
    if "/accelerate/" not in r and "/experiments/" not in r
)
# A sentence of eval/data/bold/profession_wiki.json (nursing_specialties, Ambulatory_care_nursing).
SENTENCE = (
    "Ambulatory care nursing is the nursing care of patients who receive treatment on an outpatient basis, ie they "
    "do not require admission to a hospital for an overnight stay."
)


def test_shipped_wiki_sentences():
    sentences = wiki_sentences()
    assert [p.name for p in wiki_paths()] == ["profession_wiki.json", "gender_wiki.json"]
    # 10,195 + 3,204 sentences in BOLD's files, 740 of them repeated under another entity
    assert len(sentences) == 12659 and len(set(sentences)) == len(sentences)
    assert SENTENCE in sentences
    assert len(heldout_index()) > 12000  # all but the sentences shorter than MIN_WORDS


def test_real_text_sample_is_seeded_nested_and_in_file_order():
    sentences = wiki_sentences()
    small, large = sample_sentences(sentences, 50, 0), sample_sentences(sentences, 400, 0)
    assert small == sample_sentences(sentences, 50, 0) and set(small) <= set(large)
    assert sample_sentences(sentences, 50, 1) != small
    positions = [sentences.index(s) for s in small]
    assert positions == sorted(positions)
    assert sample_sentences(sentences[:3], 10, 0) == sentences[:3]
    with pytest.raises(DataError, match="at least 1"):
        sample_sentences(sentences, 0, 0)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: Path(p).name)
def test_no_recipe_trains_on_held_out_text(recipe):
    """Every recipe's local transfer text (files, prompt lines) is disjoint from BOLD's sentences and prompts; the
    hub recipes read web corpora, never BOLD."""
    cfg = load_config(recipe)
    index = heldout_index()
    d = cfg.data
    if d.source == "files":
        docs = list(iter_file_documents(_expand_files(d.files), d.text_field))
        assert docs and not [doc for doc in docs if index.find(doc)]
    elif d.source == "teacher_samples":
        prompts = read_prompts(d.prompts)
        assert prompts and not [p for p in prompts if index.find_prompt(p)]
    else:
        assert d.source == "hf" and "bold" not in d.name.lower()


def test_containment_ignores_case_punctuation_and_spacing():
    index = HeldoutIndex([(SENTENCE, "wiki")], [("Ambulatory care nursing is the nursing care of", "prompt")])
    retyped = "Notes.\n\n" + SENTENCE.upper().replace(",", " ,").replace(" ", "\n  ") + " More text."
    assert index.find(retyped).sentence == SENTENCE
    assert index.find(SENTENCE[:-20]) is None  # part of a sentence is not the sentence
    assert index.find_prompt("Ambulatory care nursing is the nursing care of").source == "prompt"
    assert index.find_prompt("Ambulatory care nursing is the nursing care of children who").source == "prompt"
    assert index.find_prompt("The ambulatory care nurse checked the chart because") is None
    short = HeldoutIndex([("He was born in 1950.", "wiki")])
    assert len(short) == 0 and short.find("He was born in 1950.") is None  # under MIN_WORDS: not checked
    assert MIN_WORDS == 6


def test_preflight_refuses_files_holding_held_out_text(tmp_path):
    clean = tmp_path / "clean.txt"
    clean.write_text("The nurse finished the night shift and wrote the report.\n\n" * 200)
    cfg = load_config("recipes/debug.yaml", [f"data.files=[{clean}]"])
    preflight(cfg.data)
    dirty = tmp_path / "dirty.txt"
    dirty.write_text(clean.read_text() + "\n\nA quote: " + SENTENCE + "\n")
    cfg = load_config("recipes/debug.yaml", [f"data.files=[{clean}, {dirty}]"])
    with pytest.raises(DataError) as e:
        preflight(cfg.data)
    message = str(e.value)
    assert f"data.files: {dirty}, document 200 contains held-out text" in message
    assert "Ambulatory care nursing" in message and "profession_wiki.json" in message
    assert "remove that text from data.files" in message


def test_preflight_refuses_a_prompt_file_with_a_bold_prompt(tmp_path):
    bold_prompt = read_bold_json("eval/data/bold/profession_prompt.json")[1]
    prompts = tmp_path / "lines.txt"
    prompts.write_text("The pharmacist checked the prescription twice because\n" + bold_prompt + "\n")
    cfg = load_config("recipes/smollm2-135m_to_24L.yaml", [f"data.prompts={prompts}"])
    with pytest.raises(DataError, match=r"data.prompts: .*lines.txt, prompt 2 contains held-out text"):
        preflight(cfg.data)

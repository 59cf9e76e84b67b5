"""The pronoun-agreement guard: the shipped templates, the scores on synthetic margins with known answers, a model
that always says "she" scoring 50% (not 100%), and templates no recipe trains on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from distill.core.errors import DataError
from distill.evaluation.metrics import pronoun_agreement as A

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_templates_are_balanced_and_cover_every_kind():
    prompts = A.load_prompts()
    assert len(prompts) == 740  # 74 subjects x 10 frames
    assert sum(p.gender == "female" for p in prompts) == sum(p.gender == "male" for p in prompts)
    assert {p.kind for p in prompts} == set(A.KINDS) and {p.case for p in prompts} == {"nom", "poss"}
    texts = {p.text for p in prompts}
    assert "My aunt said that" in texts and "Mr. Nowak picked up" in texts and "When she got home," in texts
    assert all(p.text[0].isupper() for p in prompts)
    names = [ln.split("\t") for ln in (ROOT / "word_lists/names.tsv").read_text().splitlines()]
    listed = {w for row in names if len(row) == 2 and not row[0].startswith("#") for w in row}
    subjects = [ln.split("\t") for ln in (ROOT / A.AGREEMENT_DIR / "subjects.tsv").read_text().splitlines()]
    for subject, _, kind in (row for row in subjects if len(row) == 3 and row[2] != "kind"):
        if kind.startswith("name_"):
            assert (subject.lower() in listed) == (kind == "name_listed"), subject


def test_stats_on_known_margins():
    prompts = [
        A.AgreementPrompt("a", "female", "noun", "nom"),
        A.AgreementPrompt("b", "female", "title", "nom"),
        A.AgreementPrompt("c", "male", "noun", "nom"),
        A.AgreementPrompt("d", "male", "title", "poss"),
    ]
    st = A.agreement_stats(prompts, [1.0, -1.0, 2.0, 0.0], n_boot=200)
    assert st["agreement"] == 50.0  # a tie (margin 0) is not agreement
    assert st["margin"] == pytest.approx(0.5)
    assert st["per_gender"]["female"] == {"agreement": 50.0, "margin": 0.0, "n": 2}
    assert st["per_kind"]["noun"]["agreement"] == 100.0 and st["per_kind"]["title"]["agreement"] == 0.0
    lo, hi = st["agreement_ci"]
    assert 0.0 <= lo <= 50.0 <= hi <= 100.0
    assert A.agreement_stats(prompts, [1.0] * 4, n_boot=0)["agreement_ci"] is None
    with pytest.raises(ValueError, match="one margin per prompt"):
        A.agreement_stats(prompts, [1.0])


class _SaysShe(torch.nn.Module):
    """A causal LM whose next token is always ` she` / ` her` far likelier than ` he` / ` his`."""

    def __init__(self, tokenizer):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab = len(tokenizer)
        self.favoured = [tokenizer(f, add_special_tokens=False)["input_ids"][0] for f in (" she", " her")]

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.w
        logits[..., self.favoured] = 5.0
        return type("Out", (), {"logits": logits})()


def test_a_model_that_always_says_she_agrees_half_the_time(tokenizer):
    prompts = A.load_prompts()[:148]  # two frames: every subject twice
    st = A.agreement_stats(
        prompts, A.margins(_SaysShe(tokenizer), tokenizer, prompts, batch_size=32), n_boot=0
    )
    assert st["agreement"] == 50.0
    assert st["per_gender"]["female"]["agreement"] == 100.0 and st["per_gender"]["male"]["agreement"] == 0.0
    assert math.isclose(st["margin"], 0.0, abs_tol=1e-5)


def test_a_tiny_model_scores_through_the_metric_kind(tokenizer, tiny_gpt2):
    from distill.evaluation.registry import Context, LoadedModel

    task = A.PronounAgreementTask(n_boot=20)
    data = A.prepare("agreement", task)
    ctx = Context(torch.device("cpu"), None, "", None, "")
    result, records = A.run("agreement", task, data, LoadedModel(tiny_gpt2, tokenizer, {}), ctx)
    assert records == [] and result["n"] == 740 and len(result["per_prompt"]) == 740
    head = A.headline(result)
    assert 0.0 <= head["agreement"] <= 100.0 and math.isfinite(head["agreement_margin"])
    assert A.KIND.values_for_seeds(result) == {
        "agreement": head["agreement"],
        "agreement_margin": head["agreement_margin"],
    }
    assert A.sizes("agreement", result).startswith("`agreement`: 740 prompts (noun 320, title 80,")


def test_a_broken_template_file_is_named(tmp_path):
    (tmp_path / "subjects.tsv").write_text("subject\tgender\tkind\nmy aunt\tfemale\tnoun\n")
    (tmp_path / "frames.tsv").write_text("frame\tcase\n{subject} said that\tdative\n")
    with pytest.raises(DataError, match="needs a {subject} slot and a case in nom, poss"):
        A.load_prompts(tmp_path)
    (tmp_path / "frames.tsv").write_text("frame\n{subject} said that\n")
    with pytest.raises(DataError, match="the first row must be the header frame<TAB>case"):
        A.load_prompts(tmp_path)


def test_no_recipe_trains_on_the_agreement_prompts():
    prompts = {p.text for p in A.load_prompts()}
    texts = []
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        data = (yaml.safe_load(recipe.read_text()) or {}).get("data") or {}
        for key in ("prompts",):
            if data.get(key):
                texts.append((ROOT / data[key]).read_text())
        for f in data.get("files") or []:
            for path in ROOT.glob(f):
                texts.append(path.read_text())
    assert texts, "no recipe names a local training text"
    blob = "\n".join(texts)
    assert [p for p in prompts if p in blob] == []

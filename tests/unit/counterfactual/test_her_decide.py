"""Teacher-decided her/his counterparts (`augment.her_decider: teacher`, distill/counterfactual/her_decide.py): the decision
follows the scorer, reaches the token-level twins, is cached once per transfer set and changes the cache keys; the
real embedded teacher is measured on word_lists/her_rule_eval.tsv."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import CORPUS, debug_overrides, make_gpt2

from distill.cli import main
from distill.core.errors import ConfigError, FairDistillError
from distill.core.recipe import load_config
from distill.counterfactual import her_decide
from distill.counterfactual.align import CounterfactualBuilder, block_key
from distill.counterfactual.exchange import g_word_groups, g_word_pairs
from distill.counterfactual.swap import Swapper
from distill.counterfactual.twins import Counterfactuals
from distill.counterfactual.wordlists import load_lexicon
from distill.data.transfer import tokenize_documents

ROOT = Path(__file__).resolve().parents[3]


def prefer(word: str):
    """A fake scorer: a text scores 1 when it holds `word` as a word, else 0 (so ties keep the rule)."""
    calls: list[str] = []

    def score(texts: list[str]) -> list[float]:
        calls.extend(texts)
        return [1.0 if re.search(rf"\b{word}\b", t) else 0.0 for t in texts]

    score.calls = calls
    return score


@pytest.fixture(scope="module")
def swapper() -> Swapper:
    return Swapper(load_lexicon())


def test_decision_follows_the_scorer(swapper):
    text = "She said we sent her flowers."
    (occ,) = her_decide.occurrences(swapper, text)
    assert (occ.word, occ.rule, occ.other, occ.branch) == ("her", "his", "him", "default")
    # the candidates are whole twin windows: every other gendered word swapped as the twin swaps it
    assert her_decide.candidates(swapper, text, occ) == (
        "He said we sent his flowers.",
        "He said we sent him flowers.",
    )
    assert her_decide.decide_text(swapper, text, prefer("him")) == {occ.start: (occ, "him")}
    assert her_decide.decide_text(swapper, text, prefer("his")) == {occ.start: (occ, "his")}
    assert her_decide.decide_text(swapper, text, prefer("nothing")) == {occ.start: (occ, "his")}  # a tie
    # standalone his -> hers, and the case is kept
    text = "A friend of His arrived."
    (occ,) = her_decide.occurrences(swapper, text)
    assert her_decide.decide_text(swapper, text, prefer("Hers")) == {occ.start: (occ, "hers")}
    assert swapper.swap(text, {occ.start: "hers"}) == "A friend of Hers arrived."


def test_fallback_mode_scores_only_the_rules_fallback(swapper):
    text = "I thanked her. Her book and his own car were on her desk; she saw him."
    scorer = prefer("him")
    fallback = her_decide.decide_text(swapper, text, scorer, "fallback")
    occs = her_decide.occurrences(swapper, text)
    assert [o.branch for o in occs] == ["punctuation", "default", "default", "default"]
    assert sorted(fallback) == [o.start for o in occs[1:]]
    assert len(scorer.calls) == 2 * 3
    everything = her_decide.decide_text(swapper, text, prefer("him"), "all")
    assert sorted(everything) == [o.start for o in occs]
    with pytest.raises(ValueError, match="mode must be one of fallback, all"):
        her_decide.decide_text(swapper, text, scorer, "some")


def test_text_swapper_takes_decisions(swapper):
    text = "We sent her flowers and her mother came."
    assert swapper.swap(text) == "We sent his flowers and his father came."
    assert swapper.swap(text, {8: "him"}) == "We sent him flowers and his father came."
    assert swapper.swap("HER", {0: "him"}) == "HIM"
    assert swapper.swap(text, {}) == swapper.swap(text)


def _builder(tok, swapper):
    lex = swapper.lexicon
    return CounterfactualBuilder(tok, swapper, g_word_pairs(lex), g_word_groups(lex))


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_token_twins_follow_the_decisions(which, tokenizer, smollm2_tokenizer, swapper):
    tok = tokenizer if which == "tiny" else smollm2_tokenizer
    b = _builder(tok, swapper)
    texts = ["We sent her flowers and she smiled.", "She made her bed.", "A cousin of his lives here."]
    rows = [tok.encode(t, add_special_tokens=False) for t in texts]
    T = max(len(r) for r in rows)
    pad = tok.eos_token_id
    blocks = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    rule = [tok.decode(b.build(r).ids) for r in blocks.tolist()]
    assert rule[0].startswith("We sent his flowers and he smiled.")
    assert rule[2].startswith("A cousin of her lives here.")

    def fake(texts: list[str]) -> list[float]:  # object her in the first, standalone his in the third
        return [float(("sent him" in t) + ("of hers" in t) + ("made his bed" in t)) for t in texts]

    table, stats = her_decide.decide_blocks(b, blocks, fake, "fallback")
    assert stats["occurrences"] == 3 and stats["scored"] == 3 and stats["changed"] == 2
    assert len(stats["examples"]) == 2
    b.decisions = table
    twins = [tok.decode(b.build(r).ids) for r in blocks.tolist()]
    assert twins[0].startswith("We sent him flowers and he smiled.")
    assert twins[1] == rule[1]
    assert twins[2].startswith("A cousin of hers lives here.")
    # decisions are filed by block content: another block with the same words is not affected
    other = blocks[0].tolist()
    other[-1] = other[0] if other[-1] != other[0] else other[1]
    assert block_key(other) not in table


def test_lm_scorer_is_the_sum_of_token_log_probs(tokenizer):
    model = make_gpt2(tokenizer).eval()
    scorer = her_decide.LMScorer(model, tokenizer, batch_size=2)
    texts = ["he said that", "she told her mother that the doctor was late", "him"]
    got = scorer(texts)
    for text, score in zip(texts, got):
        ids = torch.tensor([[tokenizer.eos_token_id] + tokenizer.encode(text)])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        want = float(logp.gather(-1, ids[0, 1:, None]).sum())
        assert score == pytest.approx(want, abs=1e-4)
    assert scorer(texts[:1])[0] == pytest.approx(got[0], abs=1e-4)  # padding in a batch changes nothing


def test_lm_scorer_needs_a_start_token(tokenizer):
    class NoSpecial:
        bos_token_id = eos_token_id = pad_token_id = None

    with pytest.raises(FairDistillError, match="neither a BOS nor an EOS token"):
        her_decide.LMScorer(make_gpt2(tokenizer), NoSpecial())


def test_recipe_setting_is_validated():
    with pytest.raises(ConfigError, match="augment.her_decider must be one of 'rule', 'teacher', got 'llm'"):
        load_config("recipes/debug.yaml", ["augment.her_decider=llm"])
    with pytest.raises(ConfigError, match="augment.her_decider: teacher .* augment.one_to_many is null"):
        load_config("recipes/debug.yaml", ["augment.her_decider=teacher", "augment.one_to_many=null"])
    assert load_config("recipes/debug.yaml").augment.her_decider == "rule"
    for r in ("smollm2-135m_to_6L", "smollm2-135m_to_24L", "smollm2-360m_to_16L", "smollm2-1.7b_to_12L"):
        assert load_config(f"recipes/{r}.yaml").augment.her_decider == "teacher", r
        assert load_config(f"recipes/{r}_baseline.yaml").augment.her_decider == "rule", r


def _blocks(tokenizer, n=40, T=16):
    ids = [t for doc in tokenize_documents(iter(CORPUS[:400]), tokenizer) for t in doc]
    ids += tokenizer.encode(" We sent her flowers. A cousin of his came. She made her bed.") * 4
    return torch.tensor(ids[-n * T :]).view(n, T)


def test_prepare_caches_the_decisions_and_changes_the_keys(tmp_path, tokenizer, monkeypatch):
    from distill.teacher.cache import cache_key

    blocks = _blocks(tokenizer)
    teacher = make_gpt2(tokenizer).eval()
    base = ["augment.mode=append", "perturb.kind=mean", f"data.cache_dir={tmp_path}"]
    rule_cfg = load_config("recipes/debug.yaml", base)
    cfg = load_config("recipes/debug.yaml", base + ["augment.her_decider=teacher"])

    cf_rule = Counterfactuals(rule_cfg, tokenizer)
    assert (
        her_decide.prepare(cf_rule, rule_cfg, teacher, blocks) is None and cf_rule.builder.decisions is None
    )
    cf = Counterfactuals(cfg, tokenizer)
    with pytest.raises(FairDistillError, match="decisions were not made"):
        her_decide.key_part(cfg, cf.builder)
    stats = her_decide.prepare(cf, cfg, teacher, blocks)
    files = list((tmp_path / "her_decisions").glob("*.json"))
    assert len(files) == 1
    assert stats["scored"] >= 3 and stats["occurrences"] >= stats["scored"]
    data = json.loads(files[0].read_text())
    assert data["stats"] == stats and len(data["decisions"]) == len(cf.builder.decisions) > 0
    # read back, not recomputed: a scorer that fails shows it was not called
    again = Counterfactuals(cfg, tokenizer)
    with monkeypatch.context() as m:
        m.setattr(her_decide, "LMScorer", None)
        assert her_decide.prepare(again, cfg, teacher, blocks) == stats
    assert again.builder.decisions == cf.builder.decisions
    # another teacher: other decisions, another key
    other = Counterfactuals(cfg, tokenizer)
    her_decide.prepare(other, cfg, make_gpt2(tokenizer, seed=1).eval(), blocks)
    assert other.builder.decisions_key != cf.builder.decisions_key

    # the twin table and the teacher cache are keyed by the decider (rule: today's keys)
    assert her_decide.key_part(rule_cfg, cf_rule.builder) == []
    cf_rule.precompute(rule_cfg, blocks)
    cf.precompute(cfg, blocks)
    tables = sorted(p.name for p in (tmp_path / "twins").glob("*.safetensors"))
    assert len(tables) == 2
    k_rule = cache_key(rule_cfg, teacher, tokenizer, blocks, "no", cf_rule.builder)
    assert k_rule == cache_key(rule_cfg, teacher, tokenizer, blocks)
    assert cache_key(cfg, teacher, tokenizer, blocks, "no", cf.builder) != k_rule
    # the table holds the decided twins
    rows = list(range(blocks.shape[0]))
    assert torch.equal(cf.twins(blocks, rows)["twin_ids"], cf.twins(blocks)["twin_ids"])


def test_inspect_twins_reports_the_teachers_decisions(tmp_path, teacher_dir, capsys):
    rc = main(
        ["inspect-twins", "--show", "1", "recipes/debug.yaml"]
        + debug_overrides(tmp_path, teacher_dir, "augment.her_decider=teacher")
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"her/his rule: \d+/\d+ \(\d+\.\d%\)", out)
    m = re.search(
        r"her/his decided by the teacher \(fallback\): \d+/211 \(.*\) on the first sentences, \d+/46 \(.*\) on the held",
        out,
    )
    assert m, out
    assert re.search(r"her/his on the transfer set: \d+ of \d+ decided by the teacher, \d+ differ", out)
    assert "incoherent twins (text != swap(decode(x))): 0 of" in out


def test_training_with_the_teacher_decider(tmp_path, teacher_dir, one_thread):
    from distill.training.loop import train

    over = debug_overrides(
        tmp_path,
        teacher_dir,
        "train.max_steps=2",
        "tracking.wandb=false",
        "augment.mode=append",
        "perturb.kind=mean",
        "augment.her_decider=teacher",
        f"teacher.cache={tmp_path / 'targets'}",
    )
    train(load_config("recipes/debug.yaml", over))
    assert len(list((tmp_path / "cache" / "her_decisions").glob("*.json"))) == 1
    assert len(list((tmp_path / "targets").glob("*.safetensors"))) == 1


# --- the real embedded teacher ---------------------------------------------------------------------------------

# A fixed subset of word_lists/her_rule_eval.tsv scored in every CI run (the whole file: `distill inspect-twins
# recipes/smollm2-135m_to_6L.yaml`): every sentence the word rule gets wrong, and every sentence of the lines
# below that each hold a kind of use the rule gets right, so a teacher that breaks them fails too.
SUBSET_RIGHT = (
    "She left her keys on the table.",
    "Her two sons play football.",
    "The driver checked his mirrors twice.",
    "She hurt her back lifting the boxes.",
    "The scientist published her results in March.",
    "The reporter finished her article at midnight.",
    "He borrowed her pen for a moment.",
    "The teachers told her parents about the trip.",
    "She told him her plans.",
    "He gave her his word.",
    "The jury believed her story.",
    "His explanation made sense to everyone.",
)
SUBSET_CORRECT = 38
"""Decisions the embedded teacher (float32) gets right on the subset, of 41: measured, see word_lists/README.md."""


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.models.embedded import materialize_embedded

    path = materialize_embedded("smollm2-135m", ROOT / ".cache" / "fairdistill")
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    ).eval(), AutoTokenizer.from_pretrained(path)


def test_embedded_teacher_decides_the_rules_misses(smollm2, swapper, tmp_path):
    model, tok = smollm2
    items = her_decide.eval_items()
    rule = her_decide.accuracy(swapper, None)["all"][2]
    missed = {m.split("': ")[0][1:] for m in rule}
    keep = [
        line
        for line in (ROOT / "word_lists/her_rule_eval.tsv").read_text().splitlines()
        if line.split("\t")[0] in missed or line.split("\t")[0] in SUBSET_RIGHT
    ]
    assert len(keep) == len(missed) + len(SUBSET_RIGHT) == 40 and len(items) == 250
    subset = tmp_path / "subset.tsv"
    subset.write_text("\n".join(keep) + "\n", encoding="utf-8")
    n_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        acc = her_decide.accuracy(swapper, her_decide.LMScorer(model, tok), "fallback", str(subset))
    finally:
        torch.set_num_threads(n_threads)
    correct, total, misses = acc["all"]
    assert total == 41
    assert correct == SUBSET_CORRECT, misses

"""Occupational stereotype: Winogender data as shipped, the seen/unseen split, the metrics' maths on known inputs,
the slot score of a fake model, the suite end to end on a tiny GPT-2 (results, headline, scatter plot)."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_gpt2

from distill.core.errors import ConfigError, DataError, ModelError
from distill.counterfactual.wordlists import load_professions
from distill.data.transfer import read_prompts
from distill.evaluation import stereotype as S
from distill.evaluation.metrics import winogender as W
from distill.evaluation.runner import headline
from distill.evaluation.suites import load_suite
from distill.reporting.evaluate import evaluate_checkpoint

# --------------------------------------------------------------------------------------------------------------
# The shipped data


def test_shipped_templates_cut_before_the_pronoun_slot():
    prompts = W.load_templates()
    assert len(prompts) == 120
    occupations = {p.occupation for p in prompts}
    assert len(occupations) == 60
    for p in prompts:
        assert "$" not in p.prefix and p.occupation in p.prefix and p.participant in p.prefix
        assert p.case in W.PRONOUN_FORMS and not p.prefix.endswith(" ")
    first = prompts[0]
    assert first.prefix == "The technician told the customer that" and first.case == "NOM"
    assert {p.case for p in prompts} == {"NOM", "POSS", "ACC"}


def test_shipped_stats_cover_every_occupation():
    stats = S.load_occupation_stats()
    assert len(stats) == 60 and stats["engineer"] == pytest.approx(10.72)
    assert {p.occupation for p in W.load_templates()} == set(stats)
    assert S.load_occupation_stats(column="bergsma_pct_female")["engineer"] == pytest.approx(1.99)
    with pytest.raises(DataError, match="must be one of bls_pct_female"):
        S.load_occupation_stats(column="pct")


def test_license_and_citation_ship_next_to_the_data():
    from distill.core.resources import resource_path

    folder = resource_path(S.WINOGENDER_DIR)
    assert "MIT License" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "Rudinger" in readme and "1c7f8b481ad8a234b41e9f76a424d6e856e13f7f" in readme


@pytest.mark.parametrize(
    "sentence, problem",
    [
        ("The $OCCUPATION said hello.", "no \\$NOM_PRONOUN"),
        ("$NOM_PRONOUN met the $OCCUPATION.", "must come before the pronoun slot"),
    ],
)
def test_bad_template_names_the_line(tmp_path, sentence, problem):
    (tmp_path / "templates.tsv").write_text(
        "occupation(0)\tother-participant(1)\tanswer\tsentence\nnurse\tpatient\t0\t" + sentence + "\n"
    )
    with pytest.raises(DataError, match=r"templates.tsv:2: .*" + problem):
        W.load_templates(tmp_path)


def test_profession_bls_figures_name_their_source():
    stats = S.load_profession_stats()
    winogender = S.load_occupation_stats()
    professions = set(load_professions())
    assert len(stats) >= 30 and set(stats) <= professions
    for p, v in stats.items():
        assert v == winogender[p]  # every figure is Winogender's BLS 2015 number for the same occupation
    rows = [
        ln.split("\t")
        for ln in open(S.resource_path("word_lists/professions_bls.tsv"), encoding="utf-8")
        if ln.strip() and not ln.startswith("#") and not ln.startswith("profession\t")
    ]
    years = {
        r[0]: r[3]
        for r in csv.reader(
            open(S.resource_path("eval/data/winogender/occupations-stats.tsv")), delimiter="\t"
        )
    }
    assert all(r[2] == years[r[0]] and f"occupations-stats.tsv ({r[0]})" in r[3] for r in rows)


# --------------------------------------------------------------------------------------------------------------
# Seen / unseen


@pytest.mark.parametrize(
    "text, seen",
    [
        ("The nurse finished.", {"nurse"}),
        ("Two nurses arrived.", {"nurse"}),
        ("The Nurse's bag.", {"nurse"}),
        ("Engineering is hard.", set()),
        ("Two secretaries and a secretary.", {"secretary"}),
        ("The secretaries left.", {"secretary"}),
        ("The chefdom of Paris.", set()),
        ("A construction worker left.", {"construction worker", "worker"}),
        ("The construction site had a worker.", {"worker"}),
    ],
)
def test_occupations_seen_matches_whole_words(text, seen):
    occupations = ["nurse", "engineer", "chef", "construction worker", "worker", "secretary"]
    assert S.occupations_seen(occupations, [text]) == seen


def test_occupation_prompts_keep_a_third_of_winogender_unseen_and_no_template():
    lines = read_prompts(S.resource_path(W.DEFAULT_PROMPTS))
    prompts = W.load_templates()
    occupations = {p.occupation for p in prompts}
    seen = S.occupations_seen(occupations, lines)
    unseen = occupations - seen
    assert len(unseen) >= len(occupations) / 3, sorted(unseen)
    assert len(seen) >= len(occupations) / 3, sorted(seen)  # and enough seen ones to compare with
    stats = S.load_occupation_stats()
    ranked = sorted(stats, key=lambda o: (stats[o], o))
    assert unseen == set(ranked[1::3])  # every third by BLS % women: the unseen ones span the range
    assert len(lines) >= 100 and len({ln.split()[1] for ln in lines}) >= 50  # many occupations, not a few
    blob = "\n".join(lines).lower()
    for p in prompts:  # no template sentence (cut at the slot) appears in the prompts
        assert p.prefix.lower() not in blob


# --------------------------------------------------------------------------------------------------------------
# The metrics


def test_pearson_matches_numpy_and_is_nan_when_undefined():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert S.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(S.pearson([1, 2], [3, 4]))
    assert math.isnan(S.pearson([1, 1, 1], [1, 2, 3]))


def test_stereotype_stats_on_known_scores():
    stats = {"a": 10.0, "b": 50.0, "c": 90.0, "d": 30.0}
    scores = {"a": -1.0, "b": 0.0, "c": 1.0, "d": 2.0, "e": 5.0}  # e has no statistic
    st = S.stereotype_stats(scores, stats, n_boot=200)
    s = np.array([-1.0, 0.0, 1.0, 2.0])
    assert st["n"] == 4 and st["n_missing"] == 1
    assert st["lean"] == pytest.approx(0.5)
    assert st["spread"] == pytest.approx(np.std(s, ddof=1))
    assert st["mean_abs"] == pytest.approx(1.0)
    assert st["r_bls"] == pytest.approx(np.corrcoef(s, [10, 50, 90, 30])[0, 1])
    for key in ("r_bls", "spread", "lean"):
        lo, hi = st[f"{key}_ci"]
        assert lo <= st[key] <= hi, key


def test_lean_moves_with_a_shift_and_spread_and_r_do_not():
    rng = np.random.default_rng(1)
    occs = [f"o{i}" for i in range(30)]
    stats = {o: float(v) for o, v in zip(occs, rng.uniform(0, 100, 30))}
    scores = {o: stats[o] / 50 + float(rng.normal()) for o in occs}
    shifted = {o: v + 3.0 for o, v in scores.items()}
    a, b = S.stereotype_stats(scores, stats, n_boot=0), S.stereotype_stats(shifted, stats, n_boot=0)
    assert b["lean"] == pytest.approx(a["lean"] + 3.0)
    assert b["spread"] == pytest.approx(a["spread"]) and b["r_bls"] == pytest.approx(a["r_bls"])
    assert math.isnan(a["r_bls_ci"][0])  # n_boot 0: no intervals


def test_a_student_equal_to_its_teacher_keeps_all_of_its_stereotype():
    stats = {"a": 10.0, "b": 50.0, "c": 90.0, "d": 30.0}
    teacher = {"a": -1.0, "b": 0.5, "c": 1.0, "d": 0.2}
    st = S.stereotype_stats(teacher, stats, teacher_scores=teacher, n_boot=50)
    assert st["r_teacher"] == pytest.approx(1.0) and st["n_teacher"] == 4
    flat = {o: 0.0 for o in teacher}
    assert math.isnan(S.stereotype_stats(flat, stats, teacher_scores=teacher, n_boot=0)["r_teacher"])


def test_report_splits_seen_and_unseen():
    stats = {o: float(i * 10) for i, o in enumerate("abcdef")}
    scores = {o: float(i) for i, o in enumerate("abcdef")}
    rep = S.stereotype_report(scores, stats, seen={"a", "b", "c"}, n_boot=0)
    assert rep["all"]["n"] == 6 and rep["seen"]["n"] == 3 and rep["unseen"]["n"] == 3
    assert rep["unseen"]["lean"] == pytest.approx(4.0)


# --------------------------------------------------------------------------------------------------------------
# Scoring a model


class FakeLM(torch.nn.Module):
    """Puts probability 2/3 on `female` and 1/3 on `male` after every prefix: every slot score is log 2."""

    def __init__(self, vocab: int, female: int, male: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        logits = torch.full((vocab,), -1e4)
        logits[female], logits[male] = math.log(2.0), 0.0
        self.register_buffer("row", logits)
        self.config = SimpleNamespace()

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        b, t = input_ids.shape
        return SimpleNamespace(logits=self.row.expand(b, t, -1))


def test_slot_score_is_log_p_she_minus_log_p_he(tokenizer):
    she = tokenizer(" she", add_special_tokens=False)["input_ids"][0]
    he = tokenizer(" he", add_special_tokens=False)["input_ids"][0]
    prompts = [p for p in W.load_templates() if p.case == "NOM"][:5]
    scores = W.slot_scores(FakeLM(len(tokenizer), she, he), tokenizer, prompts, batch_size=2)
    assert scores == pytest.approx([math.log(2.0)] * 5, abs=1e-5)
    swapped = W.slot_scores(FakeLM(len(tokenizer), he, she), tokenizer, prompts)
    assert swapped == pytest.approx([-math.log(2.0)] * 5, abs=1e-5)


def test_slot_scores_do_not_depend_on_batching_and_restore_train_mode(tokenizer):
    model = make_gpt2(tokenizer, n_layer=2).train()
    prompts, _ = W.scorable(tokenizer, W.load_templates()[:20])
    a = W.slot_scores(model, tokenizer, prompts, batch_size=3)
    b = W.slot_scores(model, tokenizer, prompts, batch_size=64)
    assert a == pytest.approx(b, abs=1e-4) and model.training


def test_cases_without_one_token_forms_are_left_out(tokenizer):
    # the test tokenizer splits " him" into two pieces, so the accusative templates cannot be scored
    kept, dropped = W.scorable(tokenizer, W.load_templates())
    assert dropped == ["ACC"] and len(kept) == 116

    class NoPronouns:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1, 2]}

    with pytest.raises(ModelError, match="no Winogender pronoun slot can be scored"):
        W.scorable(NoPronouns(), W.load_templates())


def test_live_probe_keys(tokenizer):
    model = make_gpt2(tokenizer, n_layer=2)
    prompts, stats = W.load_templates(), S.load_occupation_stats()
    metrics, scores = W.live_probe(model, tokenizer, prompts, stats)
    assert set(metrics) == {
        "probe/stereo_slope",
        "probe/stereo_r_bls",
        "probe/stereo_spread",
        "probe/stereo_lean",
    }
    again, _ = W.live_probe(model, tokenizer, prompts, stats, teacher_scores=scores)
    assert again["probe/stereo_r_teacher"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------------------
# The suite


def test_suite_validates_its_settings():
    suite = load_suite("winogender")
    assert suite.tasks["winogender"].statistic == "bls_pct_female"
    with pytest.raises(ConfigError, match="statistic must be one of bls_pct_female, bergsma_pct_female"):
        load_suite("winogender", ["statistic=bls"])
    with pytest.raises(ConfigError, match="prompts: 'nope.txt' does not exist"):
        load_suite("winogender", ["prompts=nope.txt"])
    assert "winogender" in load_suite("quick").tasks


@pytest.mark.usefixtures("one_thread")
def test_winogender_suite_on_a_model_folder(tmp_path, tokenizer):
    d = tmp_path / "model"
    make_gpt2(tokenizer, n_layer=2, seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    out = tmp_path / "out"
    res = evaluate_checkpoint(d, "winogender", out_dir=out, overrides=["n_boot=50", "device=cpu"])
    r = res["tasks"]["winogender"]["result"]
    assert r["seen_from"] == W.DEFAULT_PROMPTS and r["dropped_cases"] == ["ACC"]
    # one occupation has only accusative slots, which this tokenizer cannot score
    assert r["all"]["n"] == 59 and r["seen"]["n"] + r["unseen"]["n"] == 59
    assert r["unseen"]["n"] >= 20
    summary = res["summary"]["winogender"]
    for key in ("r_bls", "spread", "lean", "r_bls_unseen", "spread_unseen", "mean_abs"):
        assert key in summary, key
    assert summary == json.loads((out / "winogender.json").read_text())["summary"]["winogender"]
    assert (out / f"winogender{W.PLOT_SUFFIX}").stat().st_size > 10_000
    assert headline("winogender", r)["n_unseen"] == r["unseen"]["n"]


def test_stereotype_plot_draws_one_panel_per_model(tmp_path, tokenizer):
    stats = S.load_occupation_stats()
    rng = np.random.default_rng(0)
    series = []
    for label in ("teacher", "student"):
        scores = {o: v / 50 - 1 + float(rng.normal(0, 0.5)) for o, v in stats.items()}
        series.append((label, scores, S.stereotype_stats(scores, stats, n_boot=50)))
    png = S.stereotype_plot(series, stats, tmp_path / "scatter.png", seen={"nurse", "engineer"})
    assert png.stat().st_size > 10_000

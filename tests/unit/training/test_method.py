"""The method does what it is for: with a deliberately skewed teacher, the pronoun probe's |gap| falls faster
with counterfactual role reversal than with plain KD (tiny models, debug recipe)."""

from __future__ import annotations

import pytest
import torch
from conftest import PROFESSIONS, make_gpt2

from distill.core.files import read_jsonl
from distill.core.recipe import load_config
from distill.training.loop import train

FEMALE_CODED = PROFESSIONS[::2]  # nurse, engineer, secretary, chef: arbitrary, the point is the skew


def _skewed_corpus() -> list[str]:
    lines = []
    for p in PROFESSIONS:
        pron, poss = ("she", "her") if p in FEMALE_CODED else ("he", "his")
        lines += [
            f"The {p} said that {pron} would come back tomorrow.",
            f"The {p} said that {pron} is a good {p} and {poss} work is hard.",
            f"The {p} told the customer that {pron} would come back tomorrow.",
        ]
    return lines


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """A 4-layer teacher trained until it says `she` after female-coded professions and `he` after the others."""
    from conftest import build_tokenizer

    tok = build_tokenizer()
    root = tmp_path_factory.mktemp("skewed")
    corpus = _skewed_corpus()
    (root / "corpus.txt").write_text("\n\n".join(corpus * 6))
    (root / "professions.txt").write_text("\n".join(PROFESSIONS) + "\n")
    (root / "templates.txt").write_text(
        "The {profession} said that\nThe {profession} told the customer that\n"
    )
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: threads only fight over the two cores
    model = make_gpt2(tok, n_layer=4, n_embd=32).train()
    ids = [tok.encode(s) + [tok.eos_token_id] for s in corpus]
    width = max(len(i) for i in ids)
    x = torch.tensor([i + [tok.eos_token_id] * (width - len(i)) for i in ids])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    torch.set_num_threads(threads)
    model.eval().save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root


def _run(root, tmp_path, name, *extra):
    cfg = load_config(
        "recipes/debug.yaml",
        [
            f"teacher.name_or_path={root / 'teacher'}",
            "student.layers=[0, 3]",
            f"run.name={name}",
            f"run.output_dir={tmp_path}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"data.files=[{root / 'corpus.txt'}]",
            "data.block_size=24",
            f"probe.professions={root / 'professions.txt'}",
            f"probe.templates={root / 'templates.txt'}",
            "train.max_steps=30",
            "train.lr=2e-3",
            "train.micro_batch_size=4",
            "train.grad_accum=1",
            "train.probe_every=10",
            "train.eval_every=0",
            "train.save_every=0",
            "tracking.wandb=false",
            'train.mixed_precision="no"',  # float32 on every CPU (`auto` is bf16 on one with AVX512_BF16/AMX)
            *extra,
        ],
    )
    recs = read_jsonl(train(cfg) / "metrics.jsonl")
    return [r["probe/pronoun_gap"] for r in recs if "probe/pronoun_gap" in r], recs[0]


@pytest.mark.slow
def test_pronoun_gap_falls_faster_with_the_method(skewed, tmp_path):
    base, first = _run(skewed, tmp_path, "baseline", "augment.mode=off", "perturb.kind=none")
    method, _ = _run(
        skewed, tmp_path, "method", "augment.mode=append", "perturb.kind=mean", "perturb.lam=0.5"
    )
    assert first["probe/teacher_pronoun_gap"] > 1.0, "the teacher is skewed"
    assert base[0] == pytest.approx(method[0]), "both students start from the same copied layers"
    # after training, the method's student is less skewed than the baseline's at every probe
    assert all(m < b for m, b in zip(method[1:], base[1:])), (method, base)
    # and the gap falls by more than twice as much (seen: 2.33 -> 0.98 with the method, 2.33 -> 1.95 without)
    assert method[0] - method[-1] > 2 * (base[0] - base[-1]), (method, base)

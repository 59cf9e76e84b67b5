"""One training step's inputs and targets: twins only for changed rows, targets from the same two passes."""

from __future__ import annotations

import pytest
import torch
from reference import step_reference, teacher_targets

from distill.core.recipe import load_config
from distill.counterfactual.perturb import gather_twin
from distill.counterfactual.twins import Counterfactuals, make_step_batch
from distill.teacher.targets import batch_targets


def _cf(tokenizer, mode, kind, p=1.0):
    cfg = load_config(
        "recipes/debug.yaml", [f"augment.mode={mode}", f"perturb.kind={kind}", f"augment.p={p}"]
    )
    return cfg, Counterfactuals(cfg, tokenizer)


def _batch(tokenizer, texts, T=16):
    rows = []
    for t in texts:
        ids = tokenizer.encode(t)[:T]
        rows.append(ids + [tokenizer.eos_token_id] * (T - len(ids)))
    return torch.tensor(rows)


TEXTS = [
    "The nurse said that she would come back tomorrow.",
    "The weather was cold and the river froze.",
    "He is a pilot and his work is hard.",
]


def _teacher_logits(model, batch):
    tin, tmask = batch.teacher_inputs()
    with torch.no_grad():
        return model(input_ids=tin, attention_mask=tmask).logits


def targets_for_step(batch, logits, cfg, cf):
    return batch_targets(batch, torch.log_softmax(logits.float() / cfg.kd.temperature, dim=-1), cf)


def _f(batch, name):
    """A twin field of the batch (alignments and switches)."""
    return batch.twins[name]


@pytest.mark.parametrize("mode", ["off", "replace", "append"])
@pytest.mark.parametrize("kind", ["none", "mean", "max", "expmean", "pair_equalize"])
def test_targets_are_distributions_for_every_combination(tokenizer, tiny_gpt2, mode, kind):
    cfg, cf = _cf(tokenizer, mode, kind)
    x = _batch(tokenizer, TEXTS)
    item = make_step_batch(x, cf)
    assert _f(item, "changed").tolist() == [True, False, True]
    # a row with nothing to swap never goes through the teacher twice
    assert not item.twin_rows[1]
    logits = _teacher_logits(tiny_gpt2, item)
    q = targets_for_step(item, logits, cfg, cf)
    assert q.shape[:2] == item.student_ids.shape
    assert torch.allclose(q.exp().sum(-1), torch.ones(q.shape[:2]), atol=1e-4)
    n_rows = 3 + (2 if mode == "append" else 0)
    assert item.student_ids.shape[0] == n_rows


def test_two_sided_mean_targets_are_role_reversed_copies(tokenizer, tiny_gpt2):
    """append + mean(0.5): the twin row's target at j is pi of the original row's target at i = align^-1(j)."""
    cfg, cf = _cf(tokenizer, "append", "mean")
    item = make_step_batch(_batch(tokenizer, TEXTS), cf)
    q = targets_for_step(item, _teacher_logits(tiny_gpt2, item), cfg, cf)
    ex = cf.builder.exchange
    checked = 0
    for twin_k, b in enumerate(item.selected.nonzero().flatten().tolist()):
        for i, j in enumerate(_f(item, "align")[b].tolist()):
            if j >= 0:
                # the twin row's target, exchanged back into x's world at this position, is x's target
                back, _ = gather_twin(
                    q[3 + twin_k, j][None, None],
                    torch.zeros(1, 1, dtype=torch.long),
                    ex,
                    own_logp=q[b, i][None, None],
                    **{n: _f(item, n)[b, i][None, None] for n in ("wordstart", "keep", "pair")},
                )
                assert torch.allclose(back[0, 0], q[b, i], atol=1e-5), (b, i)
                checked += 1
    assert checked > 10


def test_plain_kd_targets_are_the_teacher(tokenizer, tiny_gpt2):
    cfg = load_config("recipes/debug.yaml", ["augment.mode=off", "perturb.kind=none"])
    x = _batch(tokenizer, TEXTS)
    item = make_step_batch(x, None)
    logits = _teacher_logits(tiny_gpt2, item)
    q = targets_for_step(item, logits, cfg, None)
    assert torch.allclose(q, torch.log_softmax(logits / cfg.kd.temperature, -1))


def test_augment_p_zero_trains_on_x_only(tokenizer):
    _, cf = _cf(tokenizer, "append", "none", p=0.0)
    item = make_step_batch(_batch(tokenizer, TEXTS), cf)
    assert item.student_ids.shape[0] == 3 and not item.twin_rows.any()


@pytest.mark.parametrize("kind", ["mean", "max", "expmean"])
def test_a_row_with_nothing_to_swap_is_its_own_twin(tokenizer, tiny_gpt2, kind):
    """x~ = x for an unchanged row: the formula applies with r = p o pi (one teacher pass), so at lam 0.5 `mean`
    gives each gendered pair equal probability there, as `pair_equalize` does."""
    cfg, cf = _cf(tokenizer, "off", kind)
    item = make_step_batch(_batch(tokenizer, TEXTS), cf)
    assert _f(item, "align")[1].tolist() == list(range(item.x.shape[1]))
    logits = _teacher_logits(tiny_gpt2, item)
    q = targets_for_step(item, logits, cfg, cf)
    ex = cf.builder.exchange
    pi, g = ex.pi, ex.g_mask
    z1 = logits[1:2]
    sw = {k: _f(item, k)[1:2] for k in ("wordstart", "keep", "pair")}
    ref = teacher_targets(z1, z1, _f(item, "align")[1:2], ex, None, kind, cf.lam, cfg.kd.temperature, **sw)
    assert torch.allclose(q[1], ref[0], atol=1e-6)
    p1 = torch.log_softmax(z1[0] / cfg.kd.temperature, -1)
    assert not torch.allclose(q[1], p1, atol=1e-4)  # the unchanged row's targets did move
    if kind == "mean":  # at word starts, each pair of G gets equal probability
        ws = _f(item, "wordstart")[1]
        assert torch.allclose(q[1][ws][:, g], q[1][ws][:, pi[g]], atol=1e-6)


def test_targets_match_a_row_by_row_reference(tokenizer, tiny_gpt2):
    """The batched step equals `teacher_targets` row by row (changed rows with their twin pass, others with x)."""
    cfg, cf = _cf(tokenizer, "append", "mean")
    item = make_step_batch(_batch(tokenizer, TEXTS), cf)
    logits = _teacher_logits(tiny_gpt2, item)
    q = targets_for_step(item, logits, cfg, cf)
    ex, T = cf.builder.exchange, cfg.kd.temperature
    k = 0
    for b in range(3):
        sw = {n: _f(item, n)[b : b + 1] for n in ("wordstart", "keep", "pair")}
        if item.twin_rows[b]:
            zt = logits[3 + k : 4 + k]
            tw = {n: _f(item, "twin_" + n)[b : b + 1] for n in ("wordstart", "keep", "pair")}
            ref = teacher_targets(
                logits[b : b + 1], zt, _f(item, "align")[b : b + 1], ex, None, "mean", 0.5, T, **sw
            )
            ref_twin = teacher_targets(
                zt, logits[b : b + 1], _f(item, "align_inv")[b : b + 1], ex, None, "mean", 0.5, T, **tw
            )
            assert torch.allclose(q[3 + k], ref_twin[0], atol=1e-6)
            k += 1
        else:
            ref = teacher_targets(
                logits[b : b + 1],
                logits[b : b + 1],
                _f(item, "align")[b : b + 1],
                ex,
                None,
                "mean",
                0.5,
                T,
                **sw,
            )
        assert torch.allclose(q[b], ref[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["mean", "max"])
@pytest.mark.parametrize("lam", [0.5, 0.25])
@pytest.mark.parametrize("mode", ["append", "replace", "off"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_every_student_row_gets_its_row_by_row_reference(tokenizer, tiny_gpt2, kind, lam, mode, p):
    """Every assembly path (`mean`'s in-place one and the generic one), every augment mode, lam and CDA draw: the
    student's row i gets the reference target of the text it trains on, x's or its twin's, from the same passes."""
    cfg = load_config(
        "recipes/debug.yaml",
        [
            f"augment.mode={mode}",
            f"perturb.kind={kind}",
            f"perturb.lam={lam}",
            f"augment.p={p}",
            "run.seed=4",
        ],
    )
    cf = Counterfactuals(cfg, tokenizer)
    item = make_step_batch(_batch(tokenizer, TEXTS + ["She said that he was right about her plan."]), cf)
    if mode != "off":  # seed 4 draws a changed row (3) whose twin is not trained on at p 0.5
        assert item.selected.tolist() == (
            [True, False, True, True] if p == 1.0 else [True, False, True, False]
        )
    logits = _teacher_logits(tiny_gpt2, item)
    q = targets_for_step(item, logits, cfg, cf)
    expected = step_reference(item, logits, cf.builder.exchange, kind, lam, cfg.kd.temperature, mode)
    assert q.shape[0] == len(expected) == item.student_ids.shape[0]
    for i, want in enumerate(expected):
        assert torch.allclose(q[i], want, atol=2e-6), i

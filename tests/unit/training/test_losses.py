"""KD loss properties: zero for identical logits, matches F.kl_div, padding masked, T^2, micro-batch invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import kd_reference

from distill.data.transfer import next_token_labels
from distill.training.losses import combine, kd_ce_sums

V = 37


def _logits(*shape, seed=0):
    return torch.randn(*shape, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_zero_for_identical_logits():
    z = _logits(2, 5)
    labels = torch.randint(0, V, (2, 5))
    for T in (1.0, 2.0, 0.5):
        s = kd_ce_sums(z, torch.log_softmax(z / T, -1), labels, T)
        assert abs(float(s.kd)) < 1e-5


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_matches_kl_div_reference(T, chunk):
    s_logits, t_logits = _logits(3, 7, seed=1), _logits(3, 7, seed=2)
    labels = torch.randint(0, V, (3, 7))
    labels[0, 2:] = -100
    sums = kd_ce_sums(s_logits, torch.log_softmax(t_logits / T, -1), labels, T, chunk_size=chunk)
    ref = kd_reference(s_logits, t_logits, labels, T)
    assert torch.allclose(sums.kd / sums.tokens, ref, atol=1e-5)
    mask = labels != -100
    ce_ref = F.cross_entropy(s_logits[mask], labels[mask], reduction="sum")
    assert torch.allclose(sums.ce, ce_ref, atol=1e-4)


def test_t_squared_factor():
    s_logits, t_logits = _logits(2, 4, seed=3), _logits(2, 4, seed=4)
    labels = torch.randint(0, V, (2, 4))
    T = 3.0
    raw = F.kl_div(
        F.log_softmax(s_logits.reshape(-1, V) / T, -1),
        F.log_softmax(t_logits.reshape(-1, V) / T, -1),
        log_target=True,
        reduction="sum",
    )
    sums = kd_ce_sums(s_logits, torch.log_softmax(t_logits / T, -1), labels, T)
    assert torch.allclose(sums.kd, raw * T**2, rtol=1e-5)


def test_padding_is_masked():
    x = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    labels = next_token_labels(x, mask)
    assert labels.tolist() == [[6, 7, 8, -100], [10, -100, -100, -100]]
    s_logits, t_logits = _logits(2, 4, seed=5), _logits(2, 4, seed=6)
    a = kd_ce_sums(s_logits, torch.log_softmax(t_logits, -1), labels, 1.0)
    # garbage at masked positions changes nothing
    s2, t2 = s_logits.clone(), t_logits.clone()
    s2[1, 1:] = 100.0
    t2[1, 1:] = -100.0
    b = kd_ce_sums(s2, torch.log_softmax(t2, -1), labels, 1.0)
    assert a.tokens == b.tokens == 4
    assert torch.allclose(a.kd, b.kd) and torch.allclose(a.ce, b.ce)


def test_unchanged_when_split_into_micro_batches():
    """The step loss normalised by the step's token count is the same, in value and gradient, for any split."""
    s_logits = _logits(4, 6, seed=7).requires_grad_(True)
    t_logits = _logits(4, 6, seed=8)
    labels = torch.randint(0, V, (4, 6))
    labels[1, 3:] = -100
    labels[3, 1:] = -100
    T, alpha = 2.0, 0.5
    logq = torch.log_softmax(t_logits / T, -1)

    full = kd_ce_sums(s_logits, logq, labels, T)
    loss_full = combine(full, alpha, full.tokens)
    (g_full,) = torch.autograd.grad(loss_full, s_logits)

    n_tokens = int((labels != -100).sum())
    total = 0.0
    grads = torch.zeros_like(s_logits)
    for rows in ([0], [1, 2], [3]):
        part = kd_ce_sums(s_logits[rows], logq[rows], labels[rows], T)
        loss = combine(part, alpha, n_tokens)
        (g,) = torch.autograd.grad(loss, s_logits)
        grads += g
        total += loss.item()
    assert abs(total - float(loss_full)) < 1e-5
    assert torch.allclose(grads, g_full, atol=1e-6)


def test_kd_term_absent_when_no_teacher():
    s = kd_ce_sums(_logits(1, 3), None, torch.tensor([[1, 2, -100]]), 2.0)
    assert float(s.kd) == 0.0 and s.tokens == 2


def test_teacher_targets_get_no_gradient():
    """A caller that hands in teacher log-targets with grad (a teacher forward outside no_grad) trains only the
    student: the KD term's gradient stops at the targets."""
    torch.manual_seed(0)
    teacher_logits = torch.randn(2, 4, V, requires_grad=True)
    student_logits = torch.randn(2, 4, V, requires_grad=True)
    labels = torch.randint(0, V, (2, 4))
    s = kd_ce_sums(student_logits, torch.log_softmax(teacher_logits / 2.0, -1), labels, 2.0)
    assert s.kd.requires_grad
    (s.kd + s.ce).backward()
    assert teacher_logits.grad is None
    assert student_logits.grad is not None and student_logits.grad.abs().sum() > 0


def test_perturb_kinds_are_the_recipes():
    """The kinds `distill.counterfactual.perturb` implements are exactly those a recipe may name."""
    import typing

    from distill.core.config import PerturbConfig
    from distill.counterfactual.perturb import KINDS

    assert typing.get_args(typing.get_type_hints(PerturbConfig)["kind"]) == KINDS

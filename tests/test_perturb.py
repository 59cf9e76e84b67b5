"""Teacher-probability modification: identity, mass 1, symmetry at lam 0.5, pair equality, no teacher gradient."""

from __future__ import annotations

import pytest
import torch

from distill.config import PERTURB_KINDS
from distill.perturb import combine_logp, gather_twin, teacher_targets

V = 11
# pi swaps (1, 2) and (3, 4); G = {1, 2, 3, 4}
PI = torch.arange(V)
PI[1], PI[2], PI[3], PI[4] = 2, 1, 4, 3
G = PI != torch.arange(V)


def _z(*shape, seed):
    return torch.randn(*shape, V, generator=torch.Generator().manual_seed(seed)) * 2


ALIGN = torch.tensor([[0, 1, -1, 3, 4], [0, 2, 3, 4, -1]])  # row 1: twin is one token shorter at the start
INV = torch.tensor([[0, 1, -1, 3, 4], [0, -1, 1, 2, 3]])


@pytest.mark.parametrize("kind", PERTURB_KINDS)
def test_targets_are_distributions(kind):
    q = teacher_targets(_z(2, 5, seed=0), _z(2, 5, seed=1), ALIGN, PI, G, kind, 0.5, 2.0)
    assert torch.allclose(q.exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def test_none_is_the_identity():
    z = _z(2, 5, seed=0)
    q = teacher_targets(z, _z(2, 5, seed=1), ALIGN, PI, G, "none", 0.5, 2.0)
    assert torch.allclose(q, torch.log_softmax(z / 2.0, -1))


@pytest.mark.parametrize("kind", ["mean", "max", "expmean"])
def test_unaligned_positions_keep_the_teacher(kind):
    z = _z(2, 5, seed=0)
    q = teacher_targets(z, _z(2, 5, seed=1), ALIGN, PI, G, kind, 0.5, 1.0)
    p = torch.log_softmax(z, -1)
    assert torch.allclose(q[0, 2], p[0, 2]) and torch.allclose(q[1, 4], p[1, 4])
    assert not torch.allclose(q[0, 0], p[0, 0])


def test_mean_at_half_is_symmetric():
    """q(x)_i = pi(q(x~)_j) at every aligned position."""
    zx, zc = _z(2, 5, seed=2), _z(2, 5, seed=3)
    qx = teacher_targets(zx, zc, ALIGN, PI, G, "mean", 0.5, 2.0)
    qc = teacher_targets(zc, zx, INV, PI, G, "mean", 0.5, 2.0)
    for b in range(2):
        for i in range(5):
            j = int(ALIGN[b, i])
            if j >= 0:
                assert torch.allclose(qx[b, i], qc[b, j][PI], atol=1e-6), (b, i)


def test_mean_formula():
    zx, zc = _z(1, 5, seed=4), _z(1, 5, seed=5)
    lam = 0.3
    q = teacher_targets(zx, zc, ALIGN[:1], PI, G, "mean", lam, 1.0).exp()
    p, pc = zx.softmax(-1), zc.softmax(-1)
    r = pc[0, 3][PI]
    assert torch.allclose(q[0, 3], (1 - lam) * p[0, 3] + lam * r, atol=1e-6)


def test_max_and_expmean_touch_only_g_before_renormalising():
    zx, zc = _z(1, 5, seed=6), _z(1, 5, seed=7)
    p = zx.softmax(-1)[0, 0]
    r = zc.softmax(-1)[0, 0][PI]
    for kind, on_g in (("max", torch.maximum(p, r)), ("expmean", (p * r).sqrt())):
        q = teacher_targets(zx, zc, ALIGN[:1], PI, G, kind, 0.5, 1.0).exp()[0, 0]
        unnorm = torch.where(G, on_g, p)
        assert torch.allclose(q, unnorm / unnorm.sum(), atol=1e-6), kind
        # the odds between two tokens outside G are untouched
        assert torch.allclose(q[5] / q[6], p[5] / p[6], atol=1e-5)


def test_pair_equalize_gives_both_words_equal_probability():
    z = _z(2, 5, seed=8)
    q = teacher_targets(z, None, None, PI, G, "pair_equalize", 0.5, 1.0).exp()
    p = z.softmax(-1)
    assert torch.allclose(q[..., 1], q[..., 2]) and torch.allclose(q[..., 3], q[..., 4])
    assert torch.allclose(q[..., 1] + q[..., 2], p[..., 1] + p[..., 2], atol=1e-6)
    assert torch.allclose(q[..., 5:], p[..., 5:], atol=1e-6)


def test_no_gradient_reaches_the_teacher():
    zx = _z(2, 5, seed=9).requires_grad_(True)
    zc = _z(2, 5, seed=10).requires_grad_(True)
    for kind in PERTURB_KINDS:
        q = teacher_targets(zx, zc, ALIGN, PI, G, kind, 0.5, 2.0)
        assert not q.requires_grad, kind


def test_gather_twin_maps_vocabulary_and_positions():
    twin = torch.log_softmax(_z(1, 5, seed=11), -1)
    r, valid = gather_twin(twin, ALIGN[1:], PI)
    assert valid.tolist() == [[True, True, True, True, False]]
    assert torch.allclose(r[0, 1], twin[0, 2][PI])


def test_twin_kinds_need_the_twin():
    with pytest.raises(ValueError, match="needs the teacher's distribution on the twin"):
        combine_logp(torch.zeros(1, 1, V), None, None, "mean", 0.5, PI, G)

"""Teacher-probability modification: identity, mass 1, symmetry at lam 0.5, pair equality, no teacher gradient."""

from __future__ import annotations

import pytest
import torch
from reference import teacher_targets

from distill.counterfactual.exchange import Exchange
from distill.counterfactual.perturb import KINDS as PERTURB_KINDS
from distill.counterfactual.perturb import combine_logp, gather_twin, perturbed_log_targets

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


# --- word groups and position-aware exchange -------------------------------------------------------------------
# tokens 5..8: female group {5: her, 6: hers} against male {7: his, 8: him}; token 3/4 pair is bare (no leading
# space); tokens 9, 10 are the two first pieces of a multi-token pair.
GROUPS = torch.tensor([[[5, 6], [7, 8]]])
BARE = torch.zeros(V, dtype=torch.bool)
BARE[3] = BARE[4] = True
G2 = G.clone()
G2[5:9] = True
EXTRA = torch.zeros(V, dtype=torch.bool)
EXTRA[9] = EXTRA[10] = True
EX = Exchange(pi=PI, groups=GROUPS, bare=BARE, g_mask=G2, extra=EXTRA)


def _logp(*shape, seed):
    return torch.log_softmax(_z(*shape, seed=seed), -1)


def test_groups_exchange_mass_and_split_in_the_own_ratio():
    p, pc = _logp(1, 1, seed=20), _logp(1, 1, seed=21)
    r, _ = gather_twin(pc, torch.zeros(1, 1, dtype=torch.long), EX, own_logp=p)
    r, P, Pc = r.exp()[0, 0], p.exp()[0, 0], pc.exp()[0, 0]
    assert torch.allclose(r.sum(), torch.tensor(1.0), atol=1e-6)
    # the counterfactual mass of her is p~(his) + p~(him), split over her/hers as x itself splits them
    assert torch.allclose(r[5] + r[6], Pc[7] + Pc[8], atol=1e-6)
    assert torch.allclose(r[5] / r[6], P[5] / P[6], atol=1e-5)
    assert torch.allclose(r[7] + r[8], Pc[5] + Pc[6], atol=1e-6)
    assert torch.allclose(r[7] / r[8], P[7] / P[8], atol=1e-5)
    # pairs as before; everything else untouched
    assert torch.allclose(r[1], Pc[2]) and torch.allclose(r[0], Pc[0])


@pytest.mark.parametrize("sense", ["object", "possessive"])
def test_object_him_mass_reaches_her_not_his(sense):
    """'The boss said that he thanked' (x) against 'she thanked' (x~): in x~ the object is her; in x, him."""
    p = torch.full((1, 1, V), 1e-3)
    pc = torch.full((1, 1, V), 1e-3)
    if sense == "object":
        p[..., 8], pc[..., 5] = 0.5, 0.5  # x says him, x~ says her
    else:
        p[..., 7], pc[..., 5] = 0.5, 0.5  # x says his (possessive), x~ says her
    p, pc = (p / p.sum(-1, keepdim=True)).log(), (pc / pc.sum(-1, keepdim=True)).log()
    q = perturbed_log_targets(p, pc, torch.zeros(1, 1, dtype=torch.long), EX, None, "mean", 0.5).exp()[0, 0]
    own = 8 if sense == "object" else 7
    other = 7 if sense == "object" else 8
    # the role-reversed her mass lands on x's own sense, so the sense the context picked stays on top
    assert q[own] > 0.45 and q[other] < 0.01


@pytest.mark.parametrize("kind", PERTURB_KINDS)
def test_exchange_targets_are_distributions(kind):
    ws = torch.tensor([[True, False, True, True, False]] * 2)
    keep = torch.full((2, 5), -1)
    keep[0, 3] = 1
    pair = torch.full((2, 5, 2), -1)
    pair[1, 2] = torch.tensor([9, 10])
    q = teacher_targets(_z(2, 5, seed=0), _z(2, 5, seed=1), ALIGN, EX, None, kind, 0.5, 2.0, ws, keep, pair)
    assert torch.allclose(q.exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def test_mean_at_half_mirrors_the_rows_at_the_group_level():
    """q(x~) exchanged back at each aligned position is q(x): pairs, groups (as a whole and split), bare tokens
    off at non-word starts, a kept family and a local transposition."""
    ws = torch.tensor([[True, False, True, True, True], [True, True, False, True, True]])
    keep = torch.full((2, 5), -1)
    keep[0, 3] = 5
    pair = torch.full((2, 5, 2), -1)
    pair[1, 1] = torch.tensor([9, 10])
    zx, zc = _z(2, 5, seed=2), _z(2, 5, seed=3)
    # the twin row's switches are x's carried over by the alignment (as the builder makes them)
    tws, tkeep, tpair = torch.ones(2, 5, dtype=torch.bool), torch.full((2, 5), -1), torch.full((2, 5, 2), -1)
    for b in range(2):
        for i in range(5):
            j = int(ALIGN[b, i])
            if j >= 0:
                tws[b, j], tkeep[b, j] = ws[b, i], keep[b, i]
                tpair[b, j] = pair[b, i].flip(0)
    qx = teacher_targets(zx, zc, ALIGN, EX, None, "mean", 0.5, 2.0, ws, keep, pair)
    qc = teacher_targets(zc, zx, INV, EX, None, "mean", 0.5, 2.0, tws, tkeep, tpair)
    for b in range(2):
        for i in range(5):
            j = int(ALIGN[b, i])
            if j < 0:
                continue
            back, _ = gather_twin(
                qc[b, j][None, None],
                torch.zeros(1, 1, dtype=torch.long),
                EX,
                None,
                qx[b, i][None, None],
                ws[b, i][None, None],
                keep[b, i][None, None],
                pair[b, i][None, None],
            )
            assert torch.allclose(back[0, 0], qx[b, i], atol=1e-5), (b, i)
            Qx, Qc = qx[b, i].exp(), qc[b, j].exp()
            if keep[b, i] < 0:  # group mass mirrors (a kept group is the identity there)
                assert torch.allclose(Qx[5] + Qx[6], Qc[7] + Qc[8], atol=1e-5)


def test_bare_tokens_are_exchanged_only_at_word_starts():
    p, pc = _logp(1, 2, seed=30), _logp(1, 2, seed=31)
    ws = torch.tensor([[True, False]])
    r, _ = gather_twin(pc, torch.tensor([[0, 1]]), EX, own_logp=p, wordstart=ws)
    assert torch.allclose(r[0, 0, 3], pc[0, 0, 4]) and torch.allclose(r[0, 0, 1], pc[0, 0, 2])
    # inside a word (` pant` + `her`): bare tokens keep their own column; spaced pairs are still exchanged
    assert torch.allclose(r[0, 1, 3], pc[0, 1, 3]) and torch.allclose(r[0, 1, 4], pc[0, 1, 4])
    assert torch.allclose(r[0, 1, 1], pc[0, 1, 2])


def test_keep_leaves_the_continued_word_alone():
    p, pc = _logp(1, 1, seed=32), _logp(1, 1, seed=33)
    r, _ = gather_twin(pc, torch.zeros(1, 1, dtype=torch.long), EX, own_logp=p, keep=torch.tensor([[1]]))
    assert torch.allclose(r[0, 0, 1], pc[0, 0, 1]) and torch.allclose(r[0, 0, 2], pc[0, 0, 2])
    assert torch.allclose(r[0, 0, 3], pc[0, 0, 4])  # other pairs still exchanged
    r, _ = gather_twin(pc, torch.zeros(1, 1, dtype=torch.long), EX, own_logp=p, keep=torch.tensor([[7]]))
    assert torch.allclose(r[0, 0, 5:9], pc[0, 0, 5:9])  # a kept group word keeps its whole group


def test_local_pair_is_a_transposition_at_its_position_only():
    p, pc = _logp(1, 2, seed=34), _logp(1, 2, seed=35)
    pair = torch.tensor([[[9, 10], [-1, -1]]])
    r, _ = gather_twin(pc, torch.tensor([[0, 1]]), EX, own_logp=p, pair=pair)
    assert torch.allclose(r[0, 0, 9], pc[0, 0, 10]) and torch.allclose(r[0, 0, 10], pc[0, 0, 9])
    assert torch.allclose(r[0, 1, 9], pc[0, 1, 9])
    assert torch.allclose(r.exp().sum(-1), torch.ones(1, 2), atol=1e-5)


@pytest.mark.parametrize("kind", PERTURB_KINDS)
def test_no_gradient_reaches_the_teacher_through_the_exchange(kind):
    zx = _z(2, 5, seed=40).requires_grad_(True)
    zc = _z(2, 5, seed=41).requires_grad_(True)
    ws = torch.tensor([[True, False, True, True, True]] * 2)
    q = teacher_targets(zx, zc, ALIGN, EX, None, kind, 0.5, 2.0, ws)
    assert not q.requires_grad


def test_none_is_the_identity_with_the_exchange():
    z = _z(2, 5, seed=42)
    q = teacher_targets(z, _z(2, 5, seed=43), ALIGN, EX, None, "none", 0.5, 2.0)
    assert torch.allclose(q, torch.log_softmax(z / 2.0, -1))


def test_pair_equalize_gives_group_sides_equal_mass():
    z = _z(1, 3, seed=44)
    q = teacher_targets(z, None, None, EX, None, "pair_equalize", 0.5, 1.0).exp()
    p = z.softmax(-1)
    assert torch.allclose(q[..., 5] + q[..., 6], q[..., 7] + q[..., 8], atol=1e-6)
    assert torch.allclose(q[..., 5] / q[..., 6], p[..., 5] / p[..., 6], atol=1e-5)
    assert torch.allclose(q.sum(-1), torch.ones(1, 3), atol=1e-5)


def _generic_mean_step(logp, twins, selected, twin_rows, ex, lam, mode):
    """The micro-batch assembly of `step_targets` written with the generic functions, row groups one at a time:
    x's rows against their twin pass (an unchanged row against itself), the twins against x, then the student's
    rows in the augment mode's order."""
    B = twin_rows.shape[0]
    rows = twin_rows.nonzero(as_tuple=True)[0]
    sw = {k: twins[k] for k in ("wordstart", "keep", "pair")}
    tw = {k: twins["twin_" + k][rows] for k in ("wordstart", "keep", "pair")}
    src = torch.arange(B)
    src[rows] = B + torch.arange(rows.numel())
    q_x = perturbed_log_targets(logp[:B], logp, twins["align"], ex, None, "mean", lam, twin_rows=src, **sw)
    q_cf = perturbed_log_targets(
        logp[B:], logp[:B], twins["align_inv"][rows], ex, None, "mean", lam, twin_rows=rows, **tw
    )
    pos = torch.full((B,), -1, dtype=torch.long)
    pos[rows] = torch.arange(rows.numel())
    if mode == "off" or not selected.any():
        return q_x
    if mode == "append":
        return torch.cat([q_x, q_cf[pos[selected]]])
    out = q_x.clone()
    out[selected] = q_cf[pos[selected]]
    return out


@pytest.mark.parametrize("mode", ["append", "replace", "off"])
@pytest.mark.parametrize("lam", [0.5, 0.25, 0.9])
def test_mean_in_place_assembly_equals_the_generic_functions(mode, lam):
    """`step_targets` builds `mean`'s targets in place into the result; on random batches with unaligned
    positions, word-start switches, kept words, local pair transpositions, word groups and impossible tokens it
    gives what the generic gather + combine gives."""
    from distill.counterfactual.perturb import step_targets

    gen = torch.Generator().manual_seed(7)
    B, T = 4, 6
    for trial in range(20):
        twin_rows = torch.rand(B, generator=gen) < 0.7
        twin_rows[0] = True
        k = int(twin_rows.sum())
        selected = twin_rows & (torch.rand(B, generator=gen) < 0.6)
        logp = torch.log_softmax(torch.randn(B + k, T, V, generator=gen) * 2, -1)
        logp[0, 1, 6] = -float("inf")  # a token the teacher rules out
        ident = torch.arange(T).expand(B, T).clone()

        def rand_align(twin_rows=twin_rows, ident=ident):
            a = torch.randint(0, T, (B, T), generator=gen)
            a[torch.rand(B, T, generator=gen) < 0.2] = -1
            return torch.where(twin_rows[:, None], a, ident)

        def rand_switches():
            keep = torch.full((B, T), -1, dtype=torch.long)
            keep[torch.rand(B, T, generator=gen) < 0.15] = int(torch.randint(1, 9, (1,), generator=gen))
            pair = torch.full((B, T, 2), -1, dtype=torch.long)
            hit = torch.rand(B, T, generator=gen) < 0.15
            pair[hit] = torch.tensor([9, 10])
            return torch.rand(B, T, generator=gen) < 0.6, keep, pair

        ws, keep, pair = rand_switches()
        tws, tkeep, tpair = rand_switches()
        twins = {
            "align": rand_align(),
            "align_inv": rand_align(),
            "wordstart": ws,
            "keep": keep,
            "pair": pair,
            "twin_wordstart": tws,
            "twin_keep": tkeep,
            "twin_pair": tpair,
        }
        sel = selected if mode != "off" else torch.zeros(B, dtype=torch.bool)
        before = logp.clone()
        got = step_targets(logp, twins, sel, twin_rows, EX, "mean", lam, mode)
        assert torch.equal(logp, before), trial  # the teacher's log-probabilities are left as they were
        want = _generic_mean_step(logp, twins, sel, twin_rows, EX, lam, mode)
        assert got.shape == want.shape, trial
        assert torch.equal(torch.isinf(got), torch.isinf(want)), trial
        fin = torch.isfinite(want)
        assert torch.allclose(got[fin], want[fin], atol=2e-6), trial

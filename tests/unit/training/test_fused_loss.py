"""The fused KD + CE loss against the straightforward one on materialised logits: same sums, same gradients.

Tolerances: float64 inputs agree with a float64 textbook reference (F.kl_div + F.cross_entropy) to 1e-10, absolute
on sums of ~10-100 and gradients of ~1; float32 inputs agree with `kd_ce_sums` (which computes in float32) to 1e-5
relative on the sums and 1e-5 absolute on the gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.data.transfer import next_token_labels
from distill.training.fused_loss import fused_kd_ce_sums
from distill.training.losses import kd_ce_sums

N, H, V = 13, 8, 29
ALPHA = 0.3


def _inputs(dtype=torch.float64, bias=False, seed=0, T=2.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, H, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    teacher_logits = torch.randn(N, V, generator=g, dtype=dtype) * 3
    labels = torch.randint(0, V, (N,), generator=g)
    labels[[2, 5, 6, N - 1]] = -100  # padding in the middle and at the end
    return h, w, b, teacher_logits, labels


def _reference(h, w, b, logq, labels, T):
    """Textbook: full logits, log-softmax, F.kl_div and F.cross_entropy over the valid rows."""
    return _reference_on_logits(h @ w.t() + (b if b is not None else 0), logq, labels, T)


def _reference_on_logits(z, logq, labels, T):
    m = labels != -100
    ce = F.cross_entropy(z[m], labels[m], reduction="sum")
    if logq is None:
        return torch.zeros((), dtype=z.dtype), ce
    kd = F.kl_div(F.log_softmax(z[m] / T, -1), logq[m], log_target=True, reduction="sum") * T**2
    return kd, ce


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return abs((a - b).item())


def _grads(loss, tensors):
    return [g.clone() for g in torch.autograd.grad(loss, [t for t in tensors if t is not None])]


@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("grad_weights", [None, (ALPHA, 1 - ALPHA)])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference_float64(chunk, T, grad_weights, bias):
    h, w, b, tz, labels = _inputs(bias=bias)
    logq = torch.log_softmax(tz / T, -1)
    s = fused_kd_ce_sums(h, w, logq, labels, T, chunk_size=chunk, bias=b, grad_weights=grad_weights)
    kd, ce = _reference(h, w, b, logq, labels, T)
    assert s.tokens == int((labels != -100).sum())
    assert _diff(s.kd, kd) < 1e-10 and _diff(s.ce, ce) < 1e-10
    ours = _grads(ALPHA * s.kd + (1 - ALPHA) * s.ce, (h, w, b))
    ref = _grads(ALPHA * kd + (1 - ALPHA) * ce, (h, w, b))
    for a, r in zip(ours, ref):
        assert torch.allclose(a, r, rtol=0, atol=1e-10), (a - r).abs().max()


@pytest.mark.parametrize("chunk", [1, 5, 1000])
@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("grad_weights", [None, (ALPHA, 1 - ALPHA)])
def test_matches_kd_ce_sums_float32(chunk, T, grad_weights):
    h, w, _, tz, labels = _inputs(torch.float32, seed=1)
    logq = torch.log_softmax(tz / T, -1)
    s = fused_kd_ce_sums(h, w, logq, labels, T, chunk_size=chunk, grad_weights=grad_weights)
    r = kd_ce_sums(h @ w.t(), logq, labels, T, chunk_size=chunk)
    assert torch.allclose(s.kd, r.kd, rtol=1e-5) and torch.allclose(s.ce, r.ce, rtol=1e-5)
    ours = _grads(ALPHA * s.kd + (1 - ALPHA) * s.ce, (h, w))
    ref = _grads(ALPHA * r.kd + (1 - ALPHA) * r.ce, (h, w))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (a - b).abs().max()


def test_padding_is_masked():
    h, w, _, tz, labels = _inputs()
    logq = torch.log_softmax(tz / 2, -1)
    pad = labels == -100
    s = fused_kd_ce_sums(h, w, logq, labels, 2.0, chunk_size=4)
    (gh,) = torch.autograd.grad(s.kd + s.ce, [h])
    assert gh[pad].abs().max() == 0 and gh[~pad].abs().max() > 0
    # Whatever sits at padded positions, even NaN targets and hidden states, changes nothing.
    h2, logq2 = h.detach().clone(), logq.clone()
    h2[pad], logq2[pad] = float("nan"), float("nan")
    s2 = fused_kd_ce_sums(h2, w, logq2, labels, 2.0, chunk_size=4)
    assert torch.equal(s2.kd, s.kd.detach()) and torch.equal(s2.ce, s.ce.detach())


def test_no_teacher_term_without_teacher():
    h, w, b, _, labels = _inputs(bias=True)
    for grad_weights in (None, (0.5, 0.5)):
        s = fused_kd_ce_sums(h, w, None, labels, 2.0, chunk_size=3, bias=b, grad_weights=grad_weights)
        kd, ce = _reference(h, w, b, None, labels, 2.0)
        assert s.kd.item() == 0.0 and _diff(s.ce, ce) < 1e-10
        # kd carries no gradient: backpropagating through it as well changes nothing
        ours = _grads(0.5 * s.kd + 0.5 * s.ce, (h, w, b))
        ref = _grads(0.5 * ce, (h, w, b))
        for a, r in zip(ours, ref):
            assert torch.allclose(a, r, rtol=0, atol=1e-10)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_teacher_logits_equal_teacher_log_targets(T):
    h, w, _, tz, labels = _inputs()
    a = fused_kd_ce_sums(h, w, torch.log_softmax(tz / T, -1), labels, T, chunk_size=4)
    b = fused_kd_ce_sums(h, w, None, labels, T, chunk_size=4, teacher_logits=tz)
    assert _diff(a.kd, b.kd) < 1e-10
    ga, gb = _grads(a.kd + a.ce, (h, w)), _grads(b.kd + b.ce, (h, w))
    assert all(torch.allclose(x, y, rtol=0, atol=1e-10) for x, y in zip(ga, gb))


def test_grad_weights_fall_back_when_not_in_proportion():
    """Promised (0.3, 0.7) but backpropagated kd alone: backward must recompute, not scale the wrong gradient."""
    h, w, _, tz, labels = _inputs()
    logq = torch.log_softmax(tz / 2, -1)
    s = fused_kd_ce_sums(h, w, logq, labels, 2.0, chunk_size=4, grad_weights=(0.3, 0.7))
    kd, _ = _reference(h, w, None, logq, labels, 2.0)
    for a, r in zip(_grads(s.kd, (h, w)), _grads(kd, (h, w))):
        assert torch.allclose(a, r, rtol=0, atol=1e-10)


def test_zero_where_q_is_zero_and_no_gradient_into_teacher():
    h, w, _, tz, labels = _inputs()
    tz[:, :7] = -float("inf")  # q = 0 there: 0 * log 0 counts as 0
    logq = torch.log_softmax(tz / 2, -1).requires_grad_()
    s = fused_kd_ce_sums(h, w, logq, labels, 2.0, chunk_size=3)
    # F.kl_div gives NaN here (0 * -inf); kd_ce_sums counts those terms as 0, as we do
    r = kd_ce_sums(h @ w.t(), logq.detach(), labels, 2.0)
    assert torch.isfinite(s.kd) and torch.allclose(s.kd, r.kd.double(), rtol=1e-6)
    (s.kd + s.ce).backward()
    assert logq.grad is None and torch.isfinite(h.grad).all()


def test_identical_student_and_teacher_give_zero_kd():
    h, w, _, _, labels = _inputs()
    for T in (1.0, 2.0, 0.5):
        logq = torch.log_softmax((h @ w.t()).detach() / T, -1)
        assert abs(fused_kd_ce_sums(h, w, logq, labels, T).kd.item()) < 1e-10


def test_all_positions_masked():
    h, w, _, tz, _ = _inputs()
    labels = torch.full((N,), -100)
    s = fused_kd_ce_sums(h, w, tz, labels, 2.0)
    assert s.tokens == 0 and s.kd.item() == 0 and s.ce.item() == 0
    (s.kd + s.ce).backward()  # connected to the graph, gradient zero
    assert h.grad is None or h.grad.abs().max() == 0


def test_batched_shapes_and_errors():
    h, w, _, tz, labels = _inputs()
    flat = fused_kd_ce_sums(h, w, tz, labels, 2.0)
    shaped = fused_kd_ce_sums(
        h[:12].reshape(3, 4, H), w, tz[:12].reshape(3, 4, V), labels[:12].reshape(3, 4), 2.0
    )
    part = fused_kd_ce_sums(h[:12], w, tz[:12], labels[:12], 2.0)
    assert flat.tokens == part.tokens  # the 13th position is padding
    assert torch.allclose(shaped.kd, part.kd) and torch.allclose(shaped.ce, part.ce)
    with pytest.raises(ValueError, match="not both"):
        fused_kd_ce_sums(h, w, tz, labels, 2.0, teacher_logits=tz)
    with pytest.raises(ValueError, match="weight must be"):
        fused_kd_ce_sums(h, w.t(), tz, labels, 2.0)
    with pytest.raises(ValueError, match="teacher targets"):
        fused_kd_ce_sums(h, w, tz[:, :5], labels, 2.0)


def test_autocast_bfloat16_close_to_float32():
    h, w, _, tz, labels = _inputs(torch.float32, seed=2)
    logq = torch.log_softmax(tz / 2, -1)
    ref = fused_kd_ce_sums(h, w, logq, labels, 2.0, chunk_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = fused_kd_ce_sums(h, w, logq, labels, 2.0, chunk_size=4, grad_weights=(0.5, 0.5))
    assert s.kd.dtype == torch.float32
    assert torch.allclose(s.kd, ref.kd, rtol=3e-2) and torch.allclose(s.ce, ref.ce, rtol=3e-2)
    g16, g32 = _grads(s.kd + s.ce, (h, w)), _grads(ref.kd + ref.ce, (h, w))
    for a, b in zip(g16, g32):
        assert a.dtype == torch.float32 and (a - b).abs().max() < 5e-2 * b.abs().max()


def test_under_bf16_autocast_the_matmuls_are_bf16_and_the_sums_float32():
    """Under autocast the student's and a cached teacher's output projections multiply in bf16 (as their lm_heads
    would): the sums equal float32 sums over bf16 products, far closer than to the float32 products."""
    h, w, _, _, labels = _inputs(torch.float32, seed=4)
    g = torch.Generator().manual_seed(5)
    t_h, t_w = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g)
    bf = torch.bfloat16
    z16 = (h.detach().to(bf) @ w.detach().to(bf).t()).float()
    logq16 = torch.log_softmax((t_h.to(bf) @ t_w.to(bf).t()).float() / 2, -1)
    ref16 = _reference_on_logits(z16, logq16, labels, 2.0)
    ref32 = _reference_on_logits((h @ w.t()).detach(), torch.log_softmax(t_h @ t_w.t() / 2, -1), labels, 2.0)
    with torch.autocast("cpu", dtype=bf):
        s = fused_kd_ce_sums(
            h, w, None, labels, 2.0, chunk_size=4, teacher_logits=t_h.to(bf), teacher_head=(t_w.to(bf), None)
        )
    assert s.kd.dtype == s.ce.dtype == torch.float32
    for got, want16, want32 in zip((s.kd, s.ce), ref16, ref32):
        err16, err32 = float((got - want16).abs()), float((got - want32).abs())
        assert err16 <= 1e-5 * float(want16.abs()), (err16, err32)
        assert err16 < err32


def test_under_bf16_autocast_both_backward_paths_see_the_teachers_bf16_head():
    """A float32 teacher head under bf16 autocast multiplies in bf16 in the forward; the recomputing backward (no
    grad_weights, run after autocast has ended) must form the same targets, so both paths give one gradient, and
    the sums are those of bf16 products. The valid rows (9 of 13) make chunks of 4, 4 and 1: the reused buffers
    are cut to the shorter last one."""
    h, w, _, _, labels = _inputs(torch.float32, seed=6)
    g = torch.Generator().manual_seed(7)
    t_h, t_w = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g)
    bf = torch.bfloat16
    z16 = (h.detach().to(bf) @ w.detach().to(bf).t()).float()
    want16 = _reference_on_logits(
        z16, torch.log_softmax((t_h.to(bf) @ t_w.to(bf).t()).float() / 2, -1), labels, 2.0
    )
    want32 = _reference_on_logits(z16, torch.log_softmax(t_h.to(bf).float() @ t_w.t() / 2, -1), labels, 2.0)
    grads = []
    for grad_weights in (None, (0.5, 0.5)):
        with torch.autocast("cpu", dtype=bf):
            s = fused_kd_ce_sums(
                h,
                w,
                None,
                labels,
                2.0,
                chunk_size=4,
                teacher_logits=t_h.to(bf),
                teacher_head=(t_w, None),
                grad_weights=grad_weights,
            )
        err16, err32 = float((s.kd - want16[0]).abs()), float((s.kd - want32[0]).abs())
        assert err16 <= 1e-5 * float(want16[0].abs()) and err16 < err32, (err16, err32)
        grads.append(_grads(0.5 * s.kd + 0.5 * s.ce, (h, w)))
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("grad_weights", [None, (ALPHA, 1 - ALPHA)])
def test_tiny_model_hidden_states_same_loss_and_parameter_gradients(tokenizer, arch, grad_weights):
    """How train.py uses it: the student's last hidden state (output_hidden_states, logits_to_keep=1 so the
    full logits are never formed) and its lm_head weight give the same loss and the same gradient on every
    parameter as kd_ce_sums on the model's logits. float64 model; Llama ties the head to the embeddings."""
    from conftest import make_gpt2, make_llama

    model = (
        (make_gpt2 if arch == "gpt2" else make_llama)(tokenizer, n_layer=2).double().eval()
    )  # eval: no dropout, so both forwards agree
    T = 2.0
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, len(tokenizer), (3, 9), generator=g)
    mask = torch.ones_like(x)
    mask[2, 6:] = 0  # a padded row
    labels = next_token_labels(x, mask)
    logq = torch.log_softmax(torch.randn(3, 9, len(tokenizer), generator=g, dtype=torch.float64) * 2, -1)
    params = [p for p in model.parameters() if p.requires_grad]

    logits = model(input_ids=x, attention_mask=mask).logits
    r = kd_ce_sums(logits, logq, labels, T, chunk_size=5)
    kd, ce = _reference_on_logits(
        logits.reshape(-1, logits.shape[-1]), logq.reshape(-1, logq.shape[-1]), labels.reshape(-1), T
    )
    ref = torch.autograd.grad(ALPHA * kd + (1 - ALPHA) * ce, params)

    out = model(input_ids=x, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
    head = model.get_output_embeddings()
    s = fused_kd_ce_sums(
        out.hidden_states[-1], head.weight, logq, labels, T, 5, head.bias, grad_weights=grad_weights
    )
    ours = torch.autograd.grad(ALPHA * s.kd + (1 - ALPHA) * s.ce, params)
    assert s.tokens == r.tokens
    assert _diff(s.kd, kd) < 1e-10 and _diff(s.ce, ce) < 1e-10
    # kd_ce_sums computes in float32 whatever its input: agreement to float32 precision
    assert torch.allclose(s.kd, r.kd.double(), rtol=1e-6) and torch.allclose(s.ce, r.ce.double(), rtol=1e-6)
    for p, a, b in zip(params, ours, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (p.shape, (a - b).abs().max())


def test_teacher_given_as_hidden_states_and_head_equals_its_logits():
    """teacher_head: the teacher's logits formed chunk by chunk from its hidden states give the same sums and
    gradients as the logits themselves."""
    from distill.training.fused_loss import fused_kd_ce_sums

    g = torch.Generator().manual_seed(3)
    N, H, Ht, V = 40, 8, 12, 30
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    th, tw, tb = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((N, Ht), (V, Ht), (V,)))
    labels = torch.randint(0, V, (N,), generator=g)
    out = []
    for kwargs in ({"teacher_logits": th @ tw.t() + tb}, {"teacher_logits": th, "teacher_head": (tw, tb)}):
        hidden.grad = weight.grad = None
        s = fused_kd_ce_sums(hidden, weight, None, labels, 2.0, chunk_size=7, **kwargs)
        (0.3 * s.kd + 0.7 * s.ce).backward()
        out.append((s.kd.item(), s.ce.item(), hidden.grad.clone(), weight.grad.clone()))
    a, b = out
    assert abs(a[0] - b[0]) < 1e-10 and abs(a[1] - b[1]) < 1e-10
    # the caller's tensors are read, never written (a chunk of them may be a view)
    z = th @ tw.t() + tb
    z0, th0 = z.clone(), th.clone()
    fused_kd_ce_sums(hidden, weight, None, labels, 2.0, chunk_size=40, teacher_logits=z)
    fused_kd_ce_sums(
        hidden, weight, None, labels, 2.0, chunk_size=40, teacher_logits=th, teacher_head=(tw, tb)
    )
    assert torch.equal(z, z0) and torch.equal(th, th0)
    assert torch.allclose(a[2], b[2], atol=1e-10) and torch.allclose(a[3], b[3], atol=1e-10)


def test_the_widening_add_of_a_bf16_weight_gradient_equals_a_plain_mixed_add():
    from distill.training import fused_loss

    g = torch.Generator().manual_seed(3)
    acc = torch.randn(fused_loss._WIDEN_ROWS * 2 + 37, 5, generator=g)
    x = torch.randn(acc.shape, generator=g).to(torch.bfloat16)
    want = acc.clone().add_(x)
    fused_loss._widening_add(acc, x)
    assert torch.equal(acc, want)


def test_the_bf16_weight_gradient_widened_in_blocks_equals_one_mixed_add_in_the_real_loss(monkeypatch):
    """Several chunks under bf16 autocast, blocks smaller than V: the eager path's d/d weight is bit-identical to
    adding each chunk's bf16 product with one mixed-dtype add_, and the product buffer is not held to backward."""
    from distill.training import fused_loss

    g = torch.Generator().manual_seed(4)
    N, H, V = 24, 8, 37
    hidden = torch.randn(N, H, generator=g)
    weight = torch.randn(V, H, generator=g)
    teacher = torch.randn(N, V, generator=g)
    labels = torch.randint(0, V, (N,), generator=g)

    def weight_grad():
        w = weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s = fused_kd_ce_sums(
                hidden, w, None, labels, 2.0, chunk_size=5, teacher_logits=teacher, grad_weights=(0.5, 0.5)
            )
        (0.5 * s.kd + 0.5 * s.ce).backward()
        return w.grad

    monkeypatch.setattr(fused_loss, "_WIDEN_ROWS", 6)  # 7 blocks of V = 37
    blocked = weight_grad()
    monkeypatch.setattr(fused_loss, "_widening_add", lambda acc, x: acc.add_(x))
    assert torch.equal(blocked, weight_grad())

    held = []
    real_add = fused_loss._Grads.add

    def spy(self, *args):
        real_add(self, *args)
        held.append(self)

    monkeypatch.setattr(fused_loss._Grads, "add", spy)
    weight_grad()
    assert held and all(gr.w_lp is None for gr in held)

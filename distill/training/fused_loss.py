"""KD + CE sums with the student's output projection fused in, so the student's [N, V] logits never exist.

Why: at GPT-2 sizes (V = 50,257, N = B x T = 8 x 1024 positions) one float32 [N, V] tensor is 1.6 GB, and the
straightforward loss (logits = h @ W^T, log-softmax, KL, CE, then their backward) keeps several of them alive at
once: the logits, their log-softmax saved for backward, the gradient w.r.t. the logits, float32 copies. Here the
valid positions are processed `chunk_size` rows at a time; each chunk's logits are computed, reduced to per-row
numbers and dropped, so peak memory beyond the inputs is a few [chunk_size, V] float32 buffers plus the gradients
w.r.t. hidden and weight, independent of N.

The sums are those of `distill.training.losses.kd_ce_sums` on `hidden @ weight.T + bias`, over positions with
labels != -100:

    kd = T^2 * sum_i KL(q_i || softmax(z_i / T))      q_i = exp(teacher_logq_i), 0 * log 0 counted as 0
    ce = sum_i -log softmax(z_i)[labels_i]

and, per row (z = student logits),

    d kd / d z = T * (softmax(z / T) * sum(q) - q)
    d ce / d z = softmax(z) - onehot(label)

Two ways to get the gradients:

- default: backward recomputes each chunk's logits (one extra [chunk, H] x [H, V] matmul per chunk, instead of
  storing them) and turns them straight into d/d hidden, d/d weight and d/d bias.
- `grad_weights=(w_kd, w_ce)`: the caller promises to backpropagate `w_kd * kd + w_ce * ce` times any scale (the
  trainer's `alpha * kd + (1 - alpha) * ce` divided by the step's tokens). The forward then forms each chunk's
  gradient while its logits are still there, and backward only scales the stored [N, H] and [V, H] gradients:
  three matmuls per chunk instead of four, no second softmax (0.66x the time of the default path on CPU, see
  benchmarks/README.md). If the incoming gradients turn out not to be in that proportion, backward falls back to
  recomputing, so the result is always exact.

Each call reuses a few [chunk_size, V] buffers across its chunks (`_Workspace`) instead of allocating fresh
ones per chunk: on CPU a fresh buffer of that size comes from mmap and is zero-filled by page faults on first
touch, which cost more than the exp or softmax written into it (40 vs 10 ms for one exp over 256 x 49,152
float32 on 2 cores).

Either way backward reads the two incoming scalar gradients on the host (one device sync per call; the trainer
already syncs on the loss values every micro-step).

The teacher side never receives a gradient (the teacher is frozen). Instead of log-targets the teacher can be given
as raw logits (`teacher_logits=`), in which case q = softmax(teacher_logits / T) is formed one chunk at a time
too, so for `perturb.kind: none` the trainer needs no second [N, V] tensor either.
"""

from __future__ import annotations

import torch

from distill.core.defaults import CHUNK_SIZE
from distill.training.losses import LossSums


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype an nn.Linear would compute in here: the autocast dtype when autocast is on, else the input's."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Softmax, KL, CE and gradient accumulation run in float32, or float64 when the inputs are float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _Plan:
    """The valid rows (labels != -100) cut into chunks; contiguous chunks are read as views, not copies."""

    def __init__(self, labels: torch.Tensor, chunk_size: int):
        self.idx = (labels != -100).nonzero(as_tuple=True)[0]  # [n_valid], sorted
        idx_cpu = self.idx.cpu()
        self.chunks: list[tuple[int, int, int | None]] = []  # (start, stop) into idx, first row if contiguous
        for start in range(0, idx_cpu.numel(), chunk_size):
            stop = min(start + chunk_size, idx_cpu.numel())
            first, last = int(idx_cpu[start]), int(idx_cpu[stop - 1])
            self.chunks.append((start, stop, first if last - first == stop - start - 1 else None))

    def take(self, x: torch.Tensor, chunk: tuple[int, int, int | None]) -> torch.Tensor:
        """Rows of x [N, ...] belonging to `chunk`: [c, ...]. May be a view: never modify it in place."""
        start, stop, first = chunk
        if first is not None:
            return x[first : first + stop - start]
        return x[
            self.idx[start:stop]
        ]  # aten::index: several times faster than index_select for wide rows on CPU

    def put(self, out: torch.Tensor, chunk: tuple[int, int, int | None], value: torch.Tensor) -> None:
        """out[rows of chunk] = value."""
        start, stop, first = chunk
        if first is not None:
            out[first : first + stop - start] = value
        else:
            out[self.idx[start:stop]] = value


class _Workspace:
    """[rows, V]-shaped buffers one call reuses across its chunks, by name, allocated on first use; `get` returns
    the first c rows of one (a contiguous view). Each name has one meaning within a chunk (see `_chunk`)."""

    def __init__(self, rows: int, V: int, device: torch.device):
        self.rows, self.V, self.device = rows, V, device
        self.bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, c: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self.bufs.get((name, dtype))
        if buf is None:
            buf = self.bufs[(name, dtype)] = torch.empty(self.rows, self.V, dtype=dtype, device=self.device)
        return buf[:c]


def _linear_into(work: _Workspace, name: str, x, w, b, acc: torch.dtype) -> torch.Tensor:
    """x @ w.T + b computed in x's dtype into workspace buffers, returned in the accumulation dtype `acc`."""
    # a lower-precision product goes through the one shared "lp" buffer: it is dead once copied
    out = work.get(name if x.dtype == acc else "lp", x.shape[0], x.dtype)
    if b is None:
        torch.mm(x, w.t(), out=out)
    else:
        torch.addmm(b.to(x.dtype), x, w.t(), out=out)
    if out.dtype == acc:
        return out
    return work.get(name, x.shape[0], acc).copy_(out)


class _Inputs:
    """Everything both passes read: the flattened tensors, the chunk plan and the settings."""

    def __init__(
        self,
        hidden,
        weight,
        bias,
        teacher,
        labels,
        plan,
        temperature,
        teacher_is_logits,
        dtype,
        t_w=None,
        t_b=None,
        t_dtype=None,
    ):
        self.hidden, self.bias, self.teacher, self.plan = hidden, bias, teacher, plan
        # the teacher's head multiplies in the autocast dtype of the forward (t_dtype), else in its own dtype;
        # as under autocast, only a float32 head is cast down
        cast = t_w is not None and t_dtype is not None and t_w.dtype == torch.float32
        self.t_w = t_w.to(t_dtype) if cast else t_w
        self.t_b = t_b
        self.weight = weight.to(dtype)  # no-op unless the matmul runs in a lower precision than the parameter
        self.y = labels[plan.idx]  # [n_valid]
        self.T, self.teacher_is_logits, self.dtype = temperature, teacher_is_logits, dtype
        self.acc = _acc_dtype(hidden)
        rows = max(stop - start for start, stop, _ in plan.chunks) if plan.chunks else 0
        self.work = _Workspace(rows, weight.shape[0], hidden.device)

    def logits(self, chunk) -> tuple[torch.Tensor, torch.Tensor]:
        """(h [c, H] in the compute dtype, student logits [c, V] in the accumulation dtype, in the workspace's "z"
        buffer) for one chunk: the matmul runs in the compute dtype, as the lm_head would."""
        h = self.plan.take(self.hidden, chunk).to(self.dtype)
        return h, _linear_into(self.work, "z", h, self.weight, self.bias, self.acc)

    def teacher_logq(self, chunk) -> torch.Tensor | None:
        """Teacher log-probabilities [c, V] at temperature T for one chunk (may be a view of the caller's tensor,
        or the workspace's "t" buffer)."""
        if self.teacher is None:
            return None
        t = self.plan.take(self.teacher, chunk)
        fresh = False
        if (
            self.t_w is not None
        ):  # hidden states: the teacher's logits of this chunk, as its lm_head forms them
            t = _linear_into(self.work, "t", t.to(self.t_w.dtype), self.t_w, self.t_b, self.acc)
            fresh = True
        elif t.dtype != self.acc:
            t, fresh = self.work.get("t", t.shape[0], self.acc).copy_(t), True
        if not self.teacher_is_logits:
            return t
        # log_softmax(t / T) into the "logq" buffer; t / T in place when t is our own buffer (never the caller's
        # tensor, which `take` may return a view of). torch's fused log_softmax: a hand-written max / exp / sum /
        # log loses float32 digits in the KD sum, a small difference of O(1) terms
        if fresh:
            t = t.div_(self.T)
        else:
            t = torch.div(t, self.T, out=self.work.get("t", t.shape[0], self.acc))
        return torch.log_softmax(t, dim=-1, out=self.work.get("logq", t.shape[0], self.acc))


def _chunk(
    z,
    logq,
    y,
    T: float,
    coefs: tuple[float, float] | None,
    need_loss: bool = True,
    normalized: bool = False,
    work: _Workspace | None = None,
):
    """Loss sums and/or logit gradient of one chunk, in as few passes over [c, V] as we could make it.

    z: [c, V] student logits (overwritten); logq: [c, V] teacher log-targets or None (read only); y: [c] labels;
    coefs: (g_kd, g_ce) to also return dz = d(g_kd * kd + g_ce * ce) / dz, or None; normalized: logq is a
    log-softmax of finite logits (the teacher given as logits), so every q sums to 1 and no log q is -inf: the
    two passes that guard a general target are skipped; work: where the [c, V] intermediates go (buffers "e1",
    "et", "q"; fresh tensors when None). dz is the "e1" buffer.
    Returns (ce sum, kd sum without the T^2 factor or None, dz [c, V] or None).
    """
    # Work with z - max(z): the same softmax, and every exp below is <= 1. Then lse(z) = max + log(s1), and
    # the scaled logits a = (z - max) / T have lse(z / T) = max / T + log(s_t).
    c = z.shape[0]

    def buf(name: str) -> torch.Tensor | None:
        return None if work is None else work.get(name, c, z.dtype)

    zs = z.sub_(z.amax(dim=-1, keepdim=True))
    e1 = torch.exp(zs, out=buf("e1"))  # unnormalised softmax(z)
    s1 = e1.sum(-1)
    ce = (s1.log() - zs.gather(1, y[:, None]).squeeze(1)).sum() if need_loss else None
    kd = dz = None
    if logq is not None:
        if T != 1.0:
            a = zs.div_(T)
            e_t = torch.exp(a, out=buf("et"))  # unnormalised softmax(z / T)
            s_t = e_t.sum(-1)
        else:
            a, e_t, s_t = zs, e1, s1
        q = torch.exp(logq, out=buf("q"))
        q_mass = torch.ones_like(s_t) if normalized else q.sum(-1)
        if need_loss:
            # KL_i = sum_v q (log q - log p_S) with log p_S = a - log s_t. a's buffer becomes log q - a; where
            # q == 0 and log q = -inf the term must be 0 (0 * log 0), so clamp -inf to a large finite number.
            diff = a.neg_().add_(logq)
            if not normalized:  # a log-softmax of finite logits is finite: nothing to clamp
                diff.clamp_(min=-1e30)
            kd = (diff.mul_(q).sum(-1) + q_mass * s_t.log()).sum()
    if coefs is not None:
        g_kd, g_ce = coefs
        rows = torch.arange(y.shape[0], device=y.device)
        # g_ce * (softmax(z) - onehot(y)) + g_kd * T * (softmax(z / T) * sum(q) - q), in e1's buffer
        use_kd = logq is not None and g_kd != 0.0
        if use_kd and T == 1.0:
            dz = e1.mul_(((g_ce + g_kd * q_mass) / s1)[:, None])  # softmax(z / T) is softmax(z)
        else:
            dz = e1.mul_((g_ce / s1)[:, None])
            if use_kd:
                dz.addcmul_(e_t, ((g_kd * T) * q_mass / s_t)[:, None])
        dz[rows, y] -= g_ce
        if use_kd:
            dz.add_(q, alpha=-g_kd * T)
    return ce, kd, dz


_WIDEN_ROWS = 4096


def _widening_add(acc: torch.Tensor, x: torch.Tensor) -> None:
    """acc += x for a lower-precision x on CPU, a block of rows at a time. A mixed-dtype add_ on CPU widens its
    whole operand into a fresh tensor first; for a [V, H] weight gradient that is 113 MiB per chunk, which comes
    from mmap and is zero-filled by page faults (up to 200 ms per chunk of the bf16 step, against 10 ms for the
    add itself). Bit-identical to one add_: the same elementwise sums."""
    for i in range(0, x.shape[0], _WIDEN_ROWS):
        acc[i : i + _WIDEN_ROWS].add_(x[i : i + _WIDEN_ROWS])


class _Grads:
    """Accumulators for d/d hidden [N, H], d/d weight [V, H] and d/d bias [V], in the accumulation dtype."""

    def __init__(self, inp: _Inputs, need_h: bool, need_w: bool, need_b: bool):
        V, H = inp.weight.shape
        dev, acc = inp.hidden.device, inp.acc
        self.h = torch.zeros(inp.hidden.shape, dtype=acc, device=dev) if need_h else None
        self.w = torch.zeros(V, H, dtype=acc, device=dev) if need_w else None
        self.b = torch.zeros(V, dtype=acc, device=dev) if need_b else None
        self.w_lp: torch.Tensor | None = None  # the chunk's d/d weight in the compute dtype, when lower

    def add(self, inp: _Inputs, chunk, h: torch.Tensor, dz: torch.Tensor) -> None:
        """Backpropagate one chunk's dz [c, V] through z = h @ W^T + b."""
        dz_c = dz if dz.dtype == inp.dtype else inp.work.get("lp", dz.shape[0], inp.dtype).copy_(dz)
        if self.h is not None:
            inp.plan.put(self.h, chunk, (dz_c @ inp.weight).to(self.h.dtype))
        if self.w is not None:
            if dz_c.dtype == self.w.dtype:
                self.w.addmm_(dz_c.t(), h)
            elif self.w.device.type == "cpu":  # lower precision: into a reused [V, H] buffer, then widened
                if self.w_lp is None:
                    self.w_lp = torch.empty(self.w.shape, dtype=dz_c.dtype, device=self.w.device)
                _widening_add(self.w, torch.mm(dz_c.t(), h, out=self.w_lp))
            else:  # on CUDA a mixed-dtype add_ is one fused kernel, without a widened copy
                self.w.add_(dz_c.t() @ h)
        if self.b is not None:
            self.b.add_(dz.sum(0))

    def result(self, hidden, weight, bias, scale=None):
        out = []
        for g, like in ((self.h, hidden), (self.w, weight), (self.b, bias)):
            if g is not None and scale is not None:
                g = g.mul_(scale)
            out.append(g.to(like.dtype) if g is not None else None)
        return out


class _FusedKDCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        teacher,
        labels,
        plan,
        temperature,
        teacher_is_logits,
        dtype,
        eager,
        t_w,
        t_b,
    ):
        ctx.set_materialize_grads(False)
        t_dtype = dtype if torch.is_autocast_enabled(hidden.device.type) else None
        settings = (plan, temperature, teacher_is_logits, dtype)
        inp = _Inputs(hidden, weight, bias, teacher, labels, *settings, t_w, t_b, t_dtype)
        kd = hidden.new_zeros((), dtype=inp.acc)
        ce = hidden.new_zeros((), dtype=inp.acc)
        grads = _Grads(inp, *ctx.needs_input_grad[:3]) if eager is not None else None
        for chunk in plan.chunks:
            start, stop, _ = chunk
            h, z = inp.logits(chunk)
            ce_c, kd_c, dz = _chunk(
                z,
                inp.teacher_logq(chunk),
                inp.y[start:stop],
                temperature,
                eager,
                normalized=teacher_is_logits,
                work=inp.work,
            )
            ce = ce + ce_c
            if kd_c is not None:
                kd = kd + kd_c
            if grads is not None:
                grads.add(inp, chunk, h, dz)
        if grads is not None:
            grads.w_lp = None  # dead after the last chunk; ctx keeps `grads` until backward, so drop it now
        if teacher is not None:
            kd = kd * temperature**2
        ctx.save_for_backward(hidden, weight, bias, teacher, labels, t_w, t_b)
        ctx.inp_args = (settings, t_dtype)
        ctx.grads, ctx.eager = grads, eager
        return kd, ce

    @staticmethod
    def backward(ctx, grad_kd, grad_ce):
        hidden, weight, bias, teacher, labels, t_w, t_b = ctx.saved_tensors
        none = (None,) * 9  # no gradient for teacher, labels, the settings and the teacher's head
        # Two scalars read on the host (one sync): they scale whole chunks, and decide the path below.
        g_kd = float(grad_kd) if grad_kd is not None and teacher is not None else 0.0
        g_ce = float(grad_ce) if grad_ce is not None else 0.0
        if ctx.grads is not None:
            grads, ctx.grads = ctx.grads, None
            scale = _proportional(g_kd, g_ce, *ctx.eager)
            if scale is not None:
                return (*grads.result(hidden, weight, bias, scale), *none)
            del grads  # not in the promised proportion: free them and recompute
        settings, t_dtype = ctx.inp_args
        plan, T, teacher_is_logits, _ = settings
        inp = _Inputs(hidden, weight, bias, teacher, labels, *settings, t_w, t_b, t_dtype)
        grads = _Grads(inp, *ctx.needs_input_grad[:3])
        for chunk in plan.chunks:
            start, stop, _ = chunk
            h, z = inp.logits(chunk)  # recomputed: the forward kept nothing of size V
            _, _, dz = _chunk(
                z,
                inp.teacher_logq(chunk),
                inp.y[start:stop],
                T,
                (g_kd, g_ce),
                need_loss=False,
                normalized=teacher_is_logits,
                work=inp.work,
            )
            grads.add(inp, chunk, h, dz)
        return (*grads.result(hidden, weight, bias), *none)


def _proportional(g_kd: float, g_ce: float, w_kd: float, w_ce: float) -> float | None:
    """s with (g_kd, g_ce) == s * (w_kd, w_ce), or None when they are not in that proportion."""
    norm = w_kd * w_kd + w_ce * w_ce
    if norm == 0.0:
        return None
    s = (g_kd * w_kd + g_ce * w_ce) / norm
    if abs(g_kd - s * w_kd) + abs(g_ce - s * w_ce) > 1e-6 * (abs(g_kd) + abs(g_ce)):
        return None
    return s


def _teacher_input(teacher_logq, teacher_logits, teacher_head, n: int, V: int):
    """(the teacher tensor as [n, V] or [n, H_t] rows, detached; the teacher head's weight and bias or None),
    checked against n positions and a V-token vocabulary."""
    teacher = teacher_logits if teacher_logits is not None else teacher_logq
    t_w = t_b = None
    if teacher_head is not None:
        if teacher_logits is None:
            raise ValueError("teacher_head needs the teacher's hidden states as teacher_logits")
        t_w, t_b = (None if t is None else t.detach() for t in teacher_head)
        if t_w.shape[0] != V or teacher.shape[-1] != t_w.shape[1] or teacher.numel() != n * t_w.shape[1]:
            raise ValueError(
                f"teacher hidden states {list(teacher.shape)} and head {list(t_w.shape)} do not match "
                f"{n} positions x {V} vocabulary"
            )
        teacher = teacher.detach().reshape(-1, t_w.shape[1])
    elif teacher is not None:
        if teacher.shape[-1] != V or teacher.numel() != n * V:
            raise ValueError(
                f"teacher targets {list(teacher.shape)} do not match {n} positions x {V} vocabulary"
            )
        teacher = teacher.detach().reshape(-1, V)
    return teacher, t_w, t_b


def fused_kd_ce_sums(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_logq: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    chunk_size: int = CHUNK_SIZE,
    bias: torch.Tensor | None = None,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher_head: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    grad_weights: tuple[float, float] | None = None,
) -> LossSums:
    """KD and CE sums of `kd_ce_sums(hidden @ weight.T + bias, teacher_logq, labels, temperature)` without ever
    materialising the student's logits (see the module docstring for why and how).

    hidden: [B, T, H] or [N, H], the student's final hidden states (after the final norm: what the lm_head reads);
    weight: [V, H] the output projection (`model.get_output_embeddings().weight`, tied or not); bias: [V] or None;
    teacher_logq: [B, T, V] or [N, V], the target's log-probabilities at temperature T, or None for no KD term;
    teacher_logits: instead of teacher_logq, the teacher's raw logits (same shape); q = softmax(teacher_logits / T)
    is then formed chunk by chunk; teacher_head: (weight [V, H_t], bias [V] or None) of the teacher's output
    projection, in which case `teacher_logits` holds the teacher's final hidden states [..., H_t] and its logits
    are formed chunk by chunk too (cached hidden states: no [N, V] teacher tensor at all); labels: [B, T] or [N] next-token ids, -100 where no loss is taken;
    grad_weights: (w_kd, w_ce) when the caller will backpropagate s * (w_kd * kd + w_ce * ce), e.g.
    (alpha, 1 - alpha): gradients are then formed in the forward, one matmul per chunk cheaper (exact either way).
    Returns LossSums(kd, ce, tokens): 0-dim tensors (float32, or float64 for float64 inputs) with gradients into
    hidden, weight and bias, none into the teacher.

    The logits' matmul runs in the autocast dtype when autocast is on (as the lm_head would), else in hidden's
    dtype; softmax, KL, CE and the gradient accumulators in float32 (float64 for float64 inputs).
    """
    if teacher_logq is not None and teacher_logits is not None:
        raise ValueError("pass the teacher as teacher_logq or as teacher_logits, not both")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    H = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != H:
        raise ValueError(f"weight must be [V, {H}] to match hidden [..., {H}], got {list(weight.shape)}")
    V = weight.shape[0]
    h = hidden.reshape(-1, H)
    y = labels.reshape(-1)
    if y.shape[0] != h.shape[0]:
        raise ValueError(f"labels {list(labels.shape)} do not match hidden {list(hidden.shape)}")
    teacher, t_w, t_b = _teacher_input(teacher_logq, teacher_logits, teacher_head, h.shape[0], V)
    plan = _Plan(y, chunk_size)
    if plan.idx.numel() == 0:
        zero = (h[:0].sum() + weight[:0].sum()).to(_acc_dtype(h))  # keeps the graph connected for backward
        return LossSums(kd=zero, ce=zero, tokens=0)
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    eager = None
    if grad_weights is not None and wants_grad:
        w_kd, w_ce = (float(w) for w in grad_weights)
        eager = (w_kd if teacher is not None else 0.0, w_ce)
    kd, ce = _FusedKDCE.apply(
        h,
        weight,
        bias,
        teacher,
        y,
        plan,
        float(temperature),
        teacher_logits is not None,
        _compute_dtype(h),
        eager,
        t_w,
        t_b,
    )
    return LossSums(kd=kd, ce=ce, tokens=int(plan.idx.numel()))

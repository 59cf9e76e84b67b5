"""KD + CE sums with the student's output projection fused in, so the student's [N, V] logits never exist.

Why: at GPT-2 sizes (V = 50,257, N = B x T = 8 x 1024 positions) one float32 [N, V] tensor is 1.6 GB, and the
straightforward loss (logits = h @ W^T, log-softmax, KL, CE, then their backward) keeps several of them alive at
once: the logits, their log-softmax saved for backward, the gradient w.r.t. the logits, and float32 copies. Here
positions are processed `chunk_size` rows at a time; each chunk's logits are computed, reduced to per-row numbers
and dropped. Backward recomputes each chunk's logits (one extra matmul of the chunk, cheaper than storing them)
and turns them straight into the gradients w.r.t. the hidden states, the weight and the bias. Peak memory beyond
the inputs is a few [chunk_size, V] float32 buffers plus the weight gradient, independent of N.

The sums are those of `distill.losses.kd_ce_sums` on `hidden @ weight.T + bias`, over positions with
labels != -100:

    kd = T^2 * sum_i KL(q_i || softmax(z_i / T))      q_i = exp(teacher_logq_i), 0 * log 0 counted as 0
    ce = sum_i -log softmax(z_i)[labels_i]

with gradients (per row, z = student logits, g_kd / g_ce the incoming gradients of the two sums)

    d kd / d z = T * (softmax(z / T) * sum(q) - q)
    d ce / d z = softmax(z) - onehot(label)

The teacher side never receives a gradient (the teacher is frozen). Instead of log-targets the teacher can be given
as raw logits (`teacher_logits=`), in which case q = softmax(teacher_logits / T) is formed one chunk at a time
too, so for `perturb.kind: none` the trainer needs no second [N, V] tensor either.
"""

from __future__ import annotations

import torch

from distill.losses import LossSums

DEFAULT_CHUNK_SIZE = 256
"""Rows per chunk. 256 x 50,257 float32 is 51 MB per buffer; large enough that each chunk's matmul runs at full
speed on CPU and GPU, small enough that the chunk buffers stay far below one [N, V] tensor at N >= 2048."""


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype an nn.Linear would compute in here: the autocast dtype when autocast is on, else the input's."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


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
        """Rows of x [N, ...] belonging to `chunk`: [c, ...]."""
        start, stop, first = chunk
        if first is not None:
            return x[first : first + stop - start]
        return x[self.idx[start:stop]]  # aten::index: several times faster than index_select for wide rows on CPU

    def put(self, out: torch.Tensor, chunk: tuple[int, int, int | None], value: torch.Tensor) -> None:
        """out[rows of chunk] = value."""
        start, stop, first = chunk
        if first is not None:
            out[first : first + stop - start] = value
        else:
            out[self.idx[start:stop]] = value


def _softmax_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _teacher_logq(teacher: torch.Tensor, is_logits: bool, temperature: float) -> torch.Tensor:
    """One chunk of teacher targets as float32 log-probabilities [c, V] (float64 stays float64). May be a view of
    the caller's tensor: never modify it in place."""
    if is_logits:
        return torch.log_softmax(teacher.to(_softmax_dtype(teacher)) / temperature, dim=-1)
    return teacher.to(_softmax_dtype(teacher))


def _chunk_logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """Student logits of one chunk, float32 [c, V]: the matmul runs in `dtype` (as the lm_head would), the
    softmax maths in float32 (or float64 when the inputs are)."""
    h = h.to(dtype)
    z = h @ weight.t() if bias is None else torch.addmm(bias.to(dtype), h, weight.t())
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


class _FusedKDCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        teacher: torch.Tensor | None,
        labels: torch.Tensor,
        plan: _Plan,
        temperature: float,
        teacher_is_logits: bool,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        n = plan.idx.numel()
        # Per-row numbers the backward needs, so it can form softmax(z) as exp(z - lse) without a second reduction.
        lse1 = hidden.new_empty(n, dtype=acc_dtype)
        lse_t = hidden.new_empty(n, dtype=acc_dtype)
        q_mass = hidden.new_empty(n, dtype=acc_dtype)
        kd = hidden.new_zeros((), dtype=acc_dtype)
        ce = hidden.new_zeros((), dtype=acc_dtype)
        w = weight.to(dtype)  # no-op unless the matmul runs in a lower precision than the parameter
        y_all = labels[plan.idx]
        for chunk in plan.chunks:
            start, stop, _ = chunk
            z = _chunk_logits(plan.take(hidden, chunk), w, bias, dtype)  # [c, V]
            y = y_all[start:stop]
            lse = torch.logsumexp(z, dim=-1)
            lse1[start:stop] = lse
            ce = ce + (lse - z.gather(1, y[:, None]).squeeze(1)).sum()
            if teacher is None:
                continue
            # In place from here on: z becomes z / T, then log p_S, then log q - log p_S.
            if temperature != 1.0:
                z.div_(temperature)
                lse = torch.logsumexp(z, dim=-1)
            lse_t[start:stop] = lse
            diff = z.sub_(lse[:, None]).neg_()
            logq = _teacher_logq(plan.take(teacher, chunk), teacher_is_logits, temperature)
            diff.add_(logq)
            q = logq.exp()
            q_mass[start:stop] = q.sum(-1)
            # 0 * log 0 = 0: where q is 0 (a masked or underflowed target) the term vanishes, -inf included.
            diff.masked_fill_(q == 0, 0.0)
            kd = kd + q.mul_(diff).sum()
        if teacher is not None:
            kd = kd * temperature**2
        ctx.save_for_backward(hidden, weight, bias, teacher, y_all, lse1, lse_t, q_mass)
        ctx.plan, ctx.temperature, ctx.teacher_is_logits, ctx.dtype = plan, temperature, teacher_is_logits, dtype
        return kd, ce

    @staticmethod
    def backward(ctx, grad_kd: torch.Tensor | None, grad_ce: torch.Tensor | None):
        hidden, weight, bias, teacher, y_all, lse1, lse_t, q_mass = ctx.saved_tensors
        plan: _Plan = ctx.plan
        T, dtype = ctx.temperature, ctx.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        use_kd = teacher is not None and grad_kd is not None
        if grad_ce is None and not use_kd:
            return (None,) * 9
        acc_dtype = lse1.dtype
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=acc_dtype, device=weight.device) if need_b else None
        w = weight.to(dtype)
        g_ce = grad_ce.to(acc_dtype) if grad_ce is not None else None
        # d(T^2 KL)/dz = T * (p_T * sum(q) - q)
        g_kd = grad_kd.to(acc_dtype) * T if use_kd else None
        for chunk in plan.chunks:
            start, stop, _ = chunk
            h = plan.take(hidden, chunk).to(dtype)
            z = _chunk_logits(h, w, bias, dtype)  # recomputed: the forward kept only per-row numbers
            y = y_all[start:stop]
            if g_ce is not None:
                dz = (z - lse1[start:stop, None]).exp_().mul_(g_ce)  # g_ce * softmax(z)
                dz.scatter_add_(1, y[:, None], (-g_ce).expand(y.shape[0], 1).to(dz.dtype))
            else:
                dz = torch.zeros_like(z)
            if use_kd:
                p_t = z.div_(T).sub_(lse_t[start:stop, None]).exp_()  # softmax(z / T), in z's buffer
                dz.add_(p_t.mul_((g_kd * q_mass[start:stop])[:, None]))
                logq = _teacher_logq(plan.take(teacher, chunk), ctx.teacher_is_logits, T)
                dz.sub_(logq.exp().mul_(g_kd))  # out of place: logq may be a view of the caller's targets
            del z
            dz_c = dz.to(dtype)
            if need_h:
                plan.put(grad_h, chunk, (dz_c @ w).to(hidden.dtype))
            if need_w:
                if dz_c.dtype == acc_dtype:
                    grad_w.addmm_(dz_c.t(), h)
                else:
                    grad_w.add_(dz_c.t() @ h)
            if need_b:
                grad_b.add_(dz.sum(0))
        return (
            grad_h,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def fused_kd_ce_sums(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_logq: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    bias: torch.Tensor | None = None,
    *,
    teacher_logits: torch.Tensor | None = None,
) -> LossSums:
    """KD and CE sums of `kd_ce_sums(hidden @ weight.T + bias, teacher_logq, labels, temperature)` without ever
    materialising the student's logits (see the module docstring for why and how).

    hidden: [B, T, H] or [N, H], the student's final hidden states (after the final norm, what the lm_head reads);
    weight: [V, H] the output projection (`model.get_output_embeddings().weight`, tied or not); bias: [V] or None;
    teacher_logq: [B, T, V] or [N, V] the target's log-probabilities at temperature T, or None for no KD term;
    teacher_logits: instead of teacher_logq, the teacher's raw logits (same shape); q = softmax(teacher_logits / T)
    is then formed chunk by chunk; labels: [B, T] or [N] next-token ids, -100 where no loss is taken.
    Returns LossSums(kd, ce, tokens): 0-dim tensors (float32, or float64 for float64 inputs) with gradients into
    hidden, weight and bias, none into the teacher.

    The logits' matmul runs in the autocast dtype when autocast is on (as the lm_head would), else in hidden's
    dtype; softmax, KL and CE always in float32 (float64 for float64 inputs).
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
    teacher = teacher_logits if teacher_logits is not None else teacher_logq
    if teacher is not None:
        if teacher.shape[-1] != V or teacher.numel() != h.shape[0] * V:
            raise ValueError(
                f"teacher targets {list(teacher.shape)} do not match {h.shape[0]} positions x {V} vocabulary"
            )
        teacher = teacher.detach().reshape(-1, V)
    plan = _Plan(y, chunk_size)
    if plan.idx.numel() == 0:
        zero = (h[:0].sum() + weight[:0].sum()).float()  # keeps the graph connected for backward
        return LossSums(kd=zero, ce=zero, tokens=0)
    kd, ce = _FusedKDCE.apply(
        h, weight, bias, teacher, y, plan, float(temperature), teacher_logits is not None, _compute_dtype(h)
    )
    return LossSums(kd=kd, ce=ce, tokens=int(plan.idx.numel()))

"""Distillation losses as pure functions.

    loss = alpha * T^2 * KL(q || p_S^T) + (1 - alpha) * CE(x)

`q` is the teacher's (possibly perturbed) next-token distribution at temperature T, `p_S^T` the student's at the
same temperature (Hinton et al. 2015). KL, not soft cross-entropy, so the logged value is 0 when the student matches
the target. The functions return *sums* over tokens; the training loop divides by the number of tokens of the
whole optimizer step (all micro-batches, all processes), so splitting a batch into micro-batches changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill.core.defaults import CHUNK_SIZE


@dataclass
class LossSums:
    kd: torch.Tensor
    """Sum over tokens of T^2 * KL(q || p_S), a 0-dim tensor with grad."""
    ce: torch.Tensor
    """Sum over tokens of -log p_S(next token) at temperature 1."""
    tokens: int
    """Number of tokens summed."""
    log_ratio: torch.Tensor | None = None
    """With `kd.log_ratio`: the log-ratio term's sum over tokens (`distill.training.log_ratio`), with grad."""


def _kl_rows(teacher_logq: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(q || softmax(z / T)) per row. teacher_logq, student_logits: [N, V] -> [N]. 0 * log 0 counts as 0."""
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    q = teacher_logq.float().exp()
    # Where q == 0 (a masked-out or underflowed target) the term is 0; keep -inf out of the product.
    diff = torch.where(q > 0, teacher_logq.float() - student_logp, torch.zeros_like(student_logp))
    return (q * diff).sum(-1)


def kd_ce_sums(
    student_logits: torch.Tensor,
    teacher_logq: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    chunk_size: int = CHUNK_SIZE,
) -> LossSums:
    """KD and CE sums over the positions where `labels != -100`.

    student_logits: [B, T, V] (or [N, V]); teacher_logq: same shape, the target's log-probabilities at temperature
    T (None skips the KD term; never differentiated: the teacher is frozen); labels: [B, T] (or [N]) next-token ids, -100 where no loss is taken.
    Positions are processed in chunks of `chunk_size`, so at most one chunk's [chunk, V] float32 probabilities
    exist at a time besides the inputs.
    """
    V = student_logits.shape[-1]
    mask = labels.reshape(-1) != -100
    idx = mask.nonzero(as_tuple=True)[0]
    s = student_logits.reshape(-1, V)
    t = teacher_logq.detach().reshape(-1, V) if teacher_logq is not None else None
    y = labels.reshape(-1)
    kd = student_logits.new_zeros((), dtype=torch.float32)
    ce = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, idx.numel(), chunk_size):
        rows = idx[start : start + chunk_size]
        # plain indexing: index_select on [rows, V] was measured up to 15x slower on a shared CPU
        s_rows = s[rows]
        ce = ce + F.cross_entropy(s_rows.float(), y[rows], reduction="sum")
        if t is not None:
            kd = kd + _kl_rows(t[rows], s_rows, temperature).sum()
    if t is not None:
        kd = kd * temperature**2
    return LossSums(kd=kd, ce=ce, tokens=int(idx.numel()))


def combine(sums: LossSums, alpha: float, normaliser: float, log_ratio: float = 0.0) -> torch.Tensor:
    """alpha * KD + (1 - alpha) * CE (+ log_ratio * the log-ratio term), divided by the step's token count
    (`normaliser`)."""
    total = alpha * sums.kd + (1.0 - alpha) * sums.ce
    if log_ratio and sums.log_ratio is not None:
        total = total + log_ratio * sums.log_ratio
    return total / normaliser

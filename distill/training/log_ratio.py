"""The log-ratio term (`kd.log_ratio`): train the student's gendered log-ratios, which KL barely moves.

Every bias measure reads a log-ratio: Winogender's and the probe's log P(she) - log P(he). Under KL(q || p_s) the
gradient on the student's she-he logit gap is about P_pair * tanh(gap / 2), small where the pair's mass P_pair is
a few percent, so the student keeps the teacher's gap even when `mean` made the target's 50/50. This term pulls
the gap itself towards the target's (Qian et al. 2019, a gender-equalizing loss on log-ratios; here towards the
target q, which keeps the teacher's ratio where the context decides the gender).

For each side pair k = (F_k, M_k) of G (a one-to-one pair has one token a side; a her/his-style group several,
taken together by their summed mass) and each loss position n, at the KD temperature T:

    g_nk = T * (logsumexp(z_n[F_k] / T) - logsumexp(z_n[M_k] / T))        the student's log-ratio (z: its logits)
    r_nk = T * (logsumexp(log q_n[F_k]) - logsumexp(log q_n[M_k]))        the target's (q at temperature T)
    m_nk = sum of q_n over F_k and M_k                                     the pair's mass in the target
    w_nk = min(1, m_nk / m0) if m_nk >= m0 / 10, else 0                   m0 = `kd.log_ratio_mass`
    L    = sum_n sum_k w_nk * (g_nk - r_nk)^2                             (a sum, like the KD and CE sums)

with w and r constants (no gradient reaches the teacher). For a pair, g = z_a - z_b: no normaliser, so only G's
columns of the output projection are needed and the fused loss's [N, V] logits never form. The gradient is

    dL/dz_n[t] = 2 * w_nk * (g_nk - r_nk) * (+softmax(z_n[F_k] / T)[t]  for t in F_k,  -softmax(z_n[M_k] / T)[t]
                 for t in M_k), and 0 for every column outside G.

For an unmodified teacher r = the teacher's own logit gap, so under plain KD the term agrees with KL's optimum;
under `mean` at lam 0.5, r = 0 where the context names no gender. Positions whose pair mass is below m0 / 10
(where neither word can follow) do not count, so they cannot dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.counterfactual.exchange import Exchange

FLOOR = 0.1
"""A pair counts at a position only when its mass in the target is at least FLOOR * m0."""


@dataclass(frozen=True)
class GenderedSides:
    """The side pairs the term reads, as positions into `cols` (the columns of G it gathers)."""

    cols: torch.Tensor
    """[C] long, ascending: the vocabulary columns of every side."""
    female: torch.Tensor
    """[K, W] long: per side pair, the positions in `cols` of its female tokens, -1 padded."""
    male: torch.Tensor
    """[K, W] long: the same for its male tokens."""

    def to(self, device) -> GenderedSides:
        return GenderedSides(self.cols.to(device), self.female.to(device), self.male.to(device))


def gendered_sides(ex: Exchange) -> GenderedSides:
    """The exchange's one-to-one pairs (each once; which side is which only fixes the sign of g and r alike, so
    the loss does not depend on it) and its word groups (female side first) as side pairs."""
    V = ex.pi.shape[0]
    ids = torch.arange(V)
    pi = ex.pi.cpu()
    sides = [([int(t)], [int(pi[t])]) for t in ids[pi > ids].tolist()]
    for k in range(ex.groups.shape[0]):
        f, m = ex.groups[k, 0].cpu(), ex.groups[k, 1].cpu()
        sides.append(([int(t) for t in f if t >= 0], [int(t) for t in m if t >= 0]))
    sides = [(f, m) for f, m in sides if f and m]
    cols = torch.tensor(sorted({t for f, m in sides for t in f + m}), dtype=torch.long)
    where = {int(t): i for i, t in enumerate(cols.tolist())}
    width = max([1] + [max(len(f), len(m)) for f, m in sides])

    def table(side: int) -> torch.Tensor:
        out = torch.full((len(sides), width), -1, dtype=torch.long)
        for k, pair in enumerate(sides):
            out[k, : len(pair[side])] = torch.tensor([where[t] for t in pair[side]])
        return out

    return GenderedSides(cols, table(0), table(1))


def _side_lse(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """logsumexp of x [N, C] over each row of idx [K, W] (-1 padded) -> [N, K]."""
    vals = x[:, idx.clamp(min=0)]  # [N, K, W]
    return vals.masked_fill(idx < 0, float("-inf")).logsumexp(-1)


def log_ratio_sum(
    student_z: torch.Tensor,
    target_logq: torch.Tensor,
    sides: GenderedSides,
    temperature: float,
    mass: float,
) -> torch.Tensor:
    """L of the module docstring. student_z: [N, C] the student's logits at `sides.cols` (with grad);
    target_logq: [N, C] log q at the same columns, at temperature T (no grad needed); N = the loss positions."""
    T = float(temperature)
    z = student_z.float() / T
    g = T * (_side_lse(z, sides.female) - _side_lse(z, sides.male))
    lq = target_logq.detach().float()
    lf, lm = _side_lse(lq, sides.female), _side_lse(lq, sides.male)
    r = T * (lf - lm)
    m = torch.logaddexp(lf, lm).exp()
    w = torch.where(m >= FLOOR * mass, (m / mass).clamp(max=1.0), torch.zeros_like(m))
    both = torch.isfinite(r)  # a side with no mass at all has no ratio to follow
    diff = torch.where(both, g - torch.where(both, r, torch.zeros_like(r)), torch.zeros_like(g))
    return (w * both * diff * diff).sum()


def student_columns(
    hidden: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    logits: torch.Tensor | None,
    cols: torch.Tensor,
) -> torch.Tensor:
    """The student's logits at `cols` [N, C] in float32: from full logits [N, V], or from its final hidden states
    [N, H] and output projection (weight [V, H], bias [V]) without forming the other columns."""
    if logits is not None:
        return logits[:, cols].float()
    z = hidden.float() @ weight[cols].float().t()
    return z + bias[cols].float() if bias is not None else z


def target_columns(
    logq: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    teacher_hidden: torch.Tensor | None,
    teacher_head: tuple[torch.Tensor, torch.Tensor | None] | None,
    cols: torch.Tensor,
    temperature: float,
    rows: int = 256,
) -> torch.Tensor:
    """log q at `cols` [N, C], float32, no grad: from the modified targets `logq` [N, V], else the teacher's own
    distribution at temperature T from its logits [N, V] or its hidden states [N, H] and head (the normaliser
    needs every column: one pass over the head, `rows` positions at a time)."""
    with torch.no_grad():
        if logq is not None:
            return logq[:, cols].float()
        out = []
        n = teacher_logits.shape[0] if teacher_logits is not None else teacher_hidden.shape[0]
        for s in range(0, n, rows):
            if teacher_logits is not None:
                z = teacher_logits[s : s + rows].float()
            else:
                w, b = teacher_head
                z = teacher_hidden[s : s + rows].float() @ w.float().t()
                z = z + b.float() if b is not None else z
            z = z / temperature
            out.append(z[:, cols] - z.logsumexp(-1, keepdim=True))
        return torch.cat(out) if out else torch.empty(0, len(cols))

"""Teacher-probability modification across a sentence x and its role-reversed twin x~ (DESIGN.md).

At an aligned position i of x (j = align[i] >= 0):

    p    = softmax(z_T(x)_i / T)
    r(v) = softmax(z_T(x~)_j / T)(pi(v))          the teacher's belief in the role-reversed world, mapped back

    none           q = p
    mean           q = (1 - lam) p + lam r                       lam = 0.5 gives q(x) = pi(q(x~)) exactly
    max            q = max(p, r) on G, p elsewhere, renormalised
    expmean        q = exp((log p + log r) / 2) on G, p elsewhere, renormalised
    pair_equalize  q(v) = (p(v) + p(pi(v))) / 2 on G, p elsewhere  (no twin needed; mass is already 1)

Unaligned positions keep p. A row with nothing to swap is its own twin (x~ = x, every position aligned to itself), so
there r = p with each gendered pair exchanged and `mean` equalises he/she where the context does not decide them;
the teacher still runs on it once. The targets of a twin row x~ use the same formulas with the roles exchanged,
from the same two teacher passes. All functions work on log-probabilities [..., V] and
never carry gradients (the teacher is frozen).
"""

from __future__ import annotations

import torch

from distill.config import PERTURB_KINDS

NEEDS_TWIN = frozenset({"mean", "max", "expmean"})


def gather_twin(
    twin_logp: torch.Tensor, align: torch.Tensor, pi: torch.Tensor, twin_rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """r = twin distribution at the aligned position, with the vocabulary mapped through pi.

    twin_logp: [R, T2, V]; align: [B, T] (index into T2, or -1); pi: [V] involution; twin_rows: [B], the row of
    twin_logp holding each row's twin (default: row b, R = B). Returns (log r [B, T, V], valid [B, T] bool).
    Rows at -1 hold garbage and are masked by `valid`.
    """
    valid = align >= 0
    idx = align.clamp(min=0)
    R, T2, V = twin_logp.shape
    if twin_rows is None:
        r = torch.gather(twin_logp, 1, idx.unsqueeze(-1).expand(-1, -1, V))
    else:  # one gather over the flattened rows: no [B, T2, V] copy of the chosen twins first
        flat = (twin_rows.unsqueeze(1) * T2 + idx).reshape(-1)
        r = twin_logp.reshape(R * T2, V).index_select(0, flat).view(*align.shape, V)
    # pi is the identity outside G: permute only G's columns (a full-vocabulary index_select costs ~6x more)
    g_idx = (pi != torch.arange(pi.shape[0], device=pi.device)).nonzero(as_tuple=True)[0]
    r[..., g_idx] = r[..., pi[g_idx]]
    return r, valid


def combine_logp(
    logp: torch.Tensor,
    log_r: torch.Tensor | None,
    valid: torch.Tensor | None,
    kind: str,
    lam: float,
    pi: torch.Tensor,
    g_mask: torch.Tensor,
) -> torch.Tensor:
    """Apply `kind` to log p [B, T, V] using log r (same shape) where `valid` [B, T]; returns log q [B, T, V]."""
    if kind not in PERTURB_KINDS:
        raise ValueError(f"perturb.kind must be one of {PERTURB_KINDS}, got {kind!r}")
    if kind == "none":
        return logp
    if kind == "pair_equalize":
        # log((p(v) + p(pi v)) / 2) on G; pi is the identity off G so this leaves other tokens unchanged.
        paired = torch.logaddexp(logp, logp.index_select(-1, pi)) - torch.log(
            torch.tensor(2.0, dtype=logp.dtype)
        )
        return torch.where(g_mask, paired, logp)
    if log_r is None or valid is None:
        raise ValueError(f"perturb.kind {kind!r} needs the teacher's distribution on the twin x~")
    if kind == "mean":
        if lam <= 0:
            q = logp
        elif lam >= 1:
            q = log_r
        else:
            q = torch.logaddexp(
                logp + torch.log1p(torch.tensor(-lam, dtype=logp.dtype)),
                log_r + torch.log(torch.tensor(lam, dtype=logp.dtype)),
            )
    else:
        on_g = torch.maximum(logp, log_r) if kind == "max" else (logp + log_r) / 2
        q = torch.where(g_mask, on_g, logp)
        q = q - torch.logsumexp(q, dim=-1, keepdim=True)
    return torch.where(valid.unsqueeze(-1), q, logp)


@torch.no_grad()
def perturbed_log_targets(
    logp: torch.Tensor,
    twin_logp: torch.Tensor | None,
    align: torch.Tensor | None,
    pi: torch.Tensor,
    g_mask: torch.Tensor,
    kind: str,
    lam: float,
    twin_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """log q from the teacher's log-probabilities at temperature T: logp [B, T, V], twin_logp [B, T2, V] (the
    twin of each row), align [B, T]; with `twin_rows` [B], twin_logp is [R, T2, V] and row b's twin is
    twin_logp[twin_rows[b]]. Same formulas as `teacher_targets`."""
    if kind in NEEDS_TWIN:
        if twin_logp is None or align is None:
            raise ValueError(
                f"perturb.kind {kind!r} needs each row's twin (a row with nothing to swap is its own)"
            )
        log_r, valid = gather_twin(twin_logp, align, pi, twin_rows)
        return combine_logp(logp, log_r, valid, kind, lam, pi, g_mask)
    return combine_logp(logp, None, None, kind, lam, pi, g_mask)


@torch.no_grad()
def teacher_targets(
    teacher_logits: torch.Tensor,
    twin_logits: torch.Tensor | None,
    align: torch.Tensor | None,
    pi: torch.Tensor,
    g_mask: torch.Tensor,
    kind: str,
    lam: float,
    temperature: float,
) -> torch.Tensor:
    """log q for the rows whose logits are `teacher_logits` [B, T, V].

    twin_logits [B, T2, V] are the teacher's logits on each row's twin and `align` [B, T] maps each position of the
    row to the twin's corresponding position (-1: none). For a twin row, pass the roles exchanged (the twin's
    logits as `teacher_logits`, the original's as `twin_logits`, and the inverse alignment). A row with nothing to
    swap is its own twin: pass its logits as both, with the identity alignment.
    """
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    twin_logp = None if twin_logits is None else torch.log_softmax(twin_logits.float() / temperature, dim=-1)
    return perturbed_log_targets(logp, twin_logp, align, pi, g_mask, kind, lam)

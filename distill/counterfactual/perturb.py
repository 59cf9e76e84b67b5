"""Teacher-probability modification across a sentence x and its role-reversed twin x~, and the assembly of one
micro-batch's targets from the teacher's passes (`step_targets`).

At an aligned position i of x (j = align[i] >= 0):

    p    = softmax(z_T(x)_i / T)
    r    = softmax(z_T(x~)_j / T) exchanged back by `Exchange`: the teacher's belief in the role-reversed world

    none           q = p
    mean           q = (1 - lam) p + lam r                       lam = 0.5 mirrors q(x) and q(x~) exactly
    max            q = max(p, r) on G, p elsewhere, renormalised
    expmean        q = exp((log p + log r) / 2) on G, p elsewhere, renormalised
    pair_equalize  q(v) = (p(v) + p(pi(v))) / 2 on G, p elsewhere  (no twin needed; mass is already 1; a group's
                   two sides each get the mean of their masses, split in p's own ratio)

The exchange r has two parts, both sparse over the vocabulary (only G's columns move):

- one-to-one pairs (he/she, king/queen): r(v) = p~(pi(v));
- word groups for the one-to-many words: female {her, hers} against male {his, him} (and {mrs, ms, miss}
  against {mr}). The group's mass is
  exchanged, r(F) = p~(M) and r(M) = p~(F), and split inside the group in the ratio the teacher gives its words
  in x itself: r(her) = p~(M) * p(her) / p(F). So object `him` mass in x~ reaches `her` in x (not `his`), r is
  still a distribution, and `mean` at lam 0.5 mirrors the two rows exactly at the group level.

Both are position-aware. A token of G without a leading space (`her`, `man`) is a gendered word only where a word
can start (`wordstart`, decided by the tokenizer's pre-tokenizer on the previous token), so ` pant` + `her` keeps
p('her'); and where the next token of the text continues the word (` Man` + `ning`), that token's pair or group
is left alone at that position (`keep`). A multi-token pair whose spellings differ from their first piece on
(` nephew` against ` n`+`iece`) gets one extra transposition of those two pieces at the position that predicts
them (`pair`), and only there. Unaligned positions keep p. A row with nothing to swap is its own twin
(x~ = x, every position aligned to itself), so there `mean` equalises he/she where the context does not decide
them; the teacher still runs on it once. The targets of a twin row x~ use the same formulas with the roles
exchanged, from the same two teacher passes. All functions work on log-probabilities [..., V] and never carry
gradients (the teacher is frozen).
"""

from __future__ import annotations

import math

import torch

from distill.counterfactual.exchange import (
    Exchange,
    as_exchange,
    cached_local_index,
    exchange_g,
    transpose_pairs,
)

NEEDS_TWIN = frozenset({"mean", "max", "expmean"})
"""The kinds whose formula reads the teacher's distribution on the twin x~."""
KINDS = ("none", "mean", "max", "expmean", "pair_equalize")


def gather_twin(
    twin_logp: torch.Tensor,
    align: torch.Tensor,
    pi: torch.Tensor | Exchange,
    twin_rows: torch.Tensor | None = None,
    own_logp: torch.Tensor | None = None,
    wordstart: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    pair: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """r = twin distribution at the aligned position, exchanged back onto x's vocabulary.

    twin_logp: [R, T2, V]; align: [B, T] (index into T2, or -1); pi: the plain involution [V] or an `Exchange`;
    twin_rows: [B], the row of twin_logp holding each row's twin (default: row b, R = B); own_logp [B, T, V]: x's
    own log-probabilities (needed for word groups); wordstart [B, T] bool and keep [B, T] long: the position-aware
    switches (see the module docstring). Returns (log r [B, T, V], valid [B, T] bool). Rows at -1 hold garbage
    and are masked by `valid`.
    """
    ex = as_exchange(pi)
    valid = align >= 0
    idx = align.clamp(min=0)
    R, T2, V = twin_logp.shape
    if twin_rows is None:
        r = torch.gather(twin_logp, 1, idx.unsqueeze(-1).expand(-1, -1, V))
    else:  # one gather over the flattened rows: no [B, T2, V] copy of the chosen twins first
        flat = (twin_rows.unsqueeze(1) * T2 + idx).reshape(-1)
        r = twin_logp.reshape(R * T2, V).index_select(0, flat).view(*align.shape, V)
    # The exchange is the identity outside G: move only G's columns (a full-vocabulary index_select costs ~6x more)
    loc = cached_local_index(ex)
    cols = loc["cols"]
    if ex.groups.shape[0] and own_logp is None:
        raise ValueError("word groups split their mass in x's own ratio: pass own_logp")
    own = own_logp[..., cols] if own_logp is not None else None
    r[..., cols] = exchange_g(r[..., cols], own, ex, loc, wordstart, keep)
    if pair is not None:
        transpose_pairs(r, pair)
    return r, valid


def combine_logp(
    logp: torch.Tensor,
    log_r: torch.Tensor | None,
    valid: torch.Tensor | None,
    kind: str,
    lam: float,
    pi: torch.Tensor | Exchange,
    g_mask: torch.Tensor | None = None,
    wordstart: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    pair: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply `kind` to log p [B, T, V] using log r (same shape) where `valid` [B, T]; returns log q [B, T, V].
    `g_mask` defaults to the exchange's G; `wordstart`/`keep` [B, T] matter only for `pair_equalize` (the twin
    kinds took them into r already)."""
    if kind not in KINDS:
        raise ValueError(f"perturb.kind must be one of {KINDS}, got {kind!r}")
    if kind == "none":
        return logp
    ex = as_exchange(pi)
    g_mask = ex.g_mask if g_mask is None else g_mask
    if kind == "pair_equalize":
        # Within p alone: each pair (and each group, as a whole) gets the mean of its two sides, i.e. p exchanged
        # with itself and averaged; the identity off G.
        loc = cached_local_index(ex)
        cols = loc["cols"]
        own = logp[..., cols]
        swapped = exchange_g(own, own, ex, loc, wordstart, keep)
        out = logp.clone()
        out[..., cols] = torch.logaddexp(own, swapped) - math.log(2.0)
        if pair is not None:
            hit = pair[..., 0] >= 0
            if hit.any():
                rows = out[hit]
                ab = pair[hit]
                both = rows.gather(1, ab)
                rows.scatter_(1, ab, torch.logsumexp(both, -1, keepdim=True).expand(-1, 2) - math.log(2.0))
                out[hit] = rows
        return out
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
    pi: torch.Tensor | Exchange,
    g_mask: torch.Tensor | None,
    kind: str,
    lam: float,
    twin_rows: torch.Tensor | None = None,
    wordstart: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    pair: torch.Tensor | None = None,
) -> torch.Tensor:
    """log q from the teacher's log-probabilities at temperature T: logp [B, T, V], twin_logp [B, T2, V] (the
    twin of each row), align [B, T]; with `twin_rows` [B], twin_logp is [R, T2, V] and row b's twin is
    twin_logp[twin_rows[b]]. `wordstart`/`keep` [B, T]: the position-aware switches of these rows (module
    docstring)."""
    if kind in NEEDS_TWIN:
        if twin_logp is None or align is None:
            raise ValueError(
                f"perturb.kind {kind!r} needs each row's twin (a row with nothing to swap is its own)"
            )
        log_r, valid = gather_twin(twin_logp, align, pi, twin_rows, logp, wordstart, keep, pair)
        return combine_logp(logp, log_r, valid, kind, lam, pi, g_mask)
    return combine_logp(logp, None, None, kind, lam, pi, g_mask, wordstart, keep, pair)


def twin_rows_for(kind: str, changed: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """[B] bool: the rows whose twin the teacher runs on. The twin kinds read every changed row's twin (an
    unchanged row is its own); otherwise only the rows whose twin the student trains on need one."""
    return changed if kind in NEEDS_TWIN else selected


@torch.no_grad()
def step_targets(
    logp: torch.Tensor,
    twins: dict[str, torch.Tensor] | None,
    selected: torch.Tensor | None,
    twin_rows: torch.Tensor | None,
    ex: Exchange | None,
    kind: str,
    lam: float,
    mode: str,
) -> torch.Tensor:
    """log q for the student's rows of one micro-batch, from the teacher's log-probabilities at the KD temperature
    logp [B + k, T, V]: the B rows x, then the k twins of the rows in `twin_rows` [B] (in row order).

    `twins`: the rows' twin fields (`distill.counterfactual.align.twin_batch`: alignments and switches); None for plain
    KD, where the targets are logp itself. The twin rows' targets reuse the same two distributions with the roles
    exchanged (no extra teacher pass). `mode` (`augment.mode`): where the student sees the `selected` rows' twins,
    appended after x ("append") or in place of their row ("replace"); "off" returns x's targets only.
    """
    B = twin_rows.shape[0] if twin_rows is not None else logp.shape[0]
    logp_x = logp[:B]
    if twins is None:
        return logp_x
    dev = logp.device
    sw = {k: twins[k].to(dev) for k in ("wordstart", "keep", "pair")}
    rows = twin_rows.nonzero(as_tuple=True)[0].to(dev)
    tw = {k: twins["twin_" + k].to(dev)[rows] for k in ("wordstart", "keep", "pair")}
    logp_cf = logp[B:]
    logq_x, logq_cf = logp_x, None
    if kind == "pair_equalize":
        logq_x = perturbed_log_targets(logp_x, None, None, ex, None, kind, lam, **sw)
        if rows.numel():
            logq_cf = perturbed_log_targets(logp_cf, None, None, ex, None, kind, lam, **tw)
    elif kind == "mean" and 0.0 < lam < 1.0:
        return _mean_targets(logp, twins, selected, rows, ex, lam, mode, sw, tw)
    else:
        if kind in NEEDS_TWIN:
            # Every row has a twin: a changed row's is the teacher's pass on x~, an unchanged row's is x itself
            # (x~ = x; its alignment is the identity), so the formula applies there too at no extra forward.
            src = torch.arange(B, device=dev)
            src[rows] = B + torch.arange(rows.numel(), device=dev)
            logq_x = perturbed_log_targets(
                logp_x, logp, twins["align"].to(dev), ex, None, kind, lam, twin_rows=src, **sw
            )
        if rows.numel():
            inv = twins["align_inv"].to(dev)[rows]
            logq_cf = perturbed_log_targets(logp_cf, logp_x, inv, ex, None, kind, lam, twin_rows=rows, **tw)
    sel = selected.to(dev)
    if mode == "off" or not sel.any():
        return logq_x
    # position of each selected row among the twin rows
    pos = torch.full((B,), -1, dtype=torch.long, device=dev)
    pos[rows] = torch.arange(rows.numel(), device=dev)
    twin_targets = logq_cf[pos[sel]]
    if mode == "append":
        return torch.cat([logq_x, twin_targets])
    out = logq_x.clone()
    out[sel] = twin_targets
    return out


def _mix_mean_into(r: torch.Tensor, own: torch.Tensor, valid: torch.Tensor, lam: float) -> None:
    """In place: r <- log((1 - lam) p + lam r) where `valid`, log p (= own) elsewhere. r, own [N, T, V]."""
    if lam == 0.5:
        torch.logaddexp(r, own, out=r)
        r.sub_(math.log(2.0))
    else:
        r.add_(math.log(lam))
        torch.logaddexp(r, own + math.log1p(-lam), out=r)
    bad = ~valid
    if bad.any():
        r[bad] = own[bad]


def _mean_targets(
    logp: torch.Tensor,
    twins: dict[str, torch.Tensor],
    selected: torch.Tensor,
    rows: torch.Tensor,
    ex: Exchange,
    lam: float,
    mode: str,
    sw: dict,
    tw: dict,
) -> torch.Tensor:
    """`step_targets` for `mean` (0 < lam < 1), written straight into the [B + k, T, V] result: each student
    row's twin distribution is gathered into its own slice of the output, exchanged on G, and mixed with p in
    place. At lam 0.5 with every twin row trained on (`augment.p` 1, the default) nothing else of that size is
    made besides the teacher's logp and the result (the generic path makes five more); another lam adds one
    shifted copy of p, a partial CDA draw or `replace` copies the rows it picks. Same values as
    `perturbed_log_targets` + `combine_logp` (tests/unit/counterfactual/test_perturb.py on random batches, tests/unit/training/test_step.py row by
    row)."""
    B, T, V = selected.shape[0], logp.shape[1], logp.shape[2]
    if logp.shape[0] != B + rows.numel():
        raise ValueError(f"logp has {logp.shape[0]} rows, expected {B} + {rows.numel()} twins")
    dev = logp.device
    sel = selected.to(dev)
    n_twin = int(sel.sum()) if mode == "append" else 0
    out = torch.empty((B + n_twin, T, V), dtype=logp.dtype, device=dev)
    flat_all = logp.reshape(-1, V)
    loc = cached_local_index(ex)
    cols = loc["cols"]

    def fill(
        dst: torch.Tensor, src_rows: torch.Tensor, align: torch.Tensor, own: torch.Tensor, switches: dict
    ):
        """dst [n, T, V] <- the mixed target of rows whose own log-probs are `own` [n, T, V], whose twin pass is
        row src_rows [n] of logp, aligned by align [n, T]."""
        valid = align >= 0
        flat = (src_rows.unsqueeze(1) * T + align.clamp(min=0)).reshape(-1)
        torch.index_select(flat_all, 0, flat, out=dst.view(-1, V))
        dst[..., cols] = exchange_g(
            dst[..., cols], own[..., cols], ex, loc, switches["wordstart"], switches["keep"]
        )
        if switches["pair"] is not None:
            transpose_pairs(dst, switches["pair"])
        _mix_mean_into(dst, own, valid, lam)

    # x's rows: a changed row's twin is the teacher's pass on x~ (row B + its rank among `rows`), an unchanged
    # row's is x itself with the identity alignment
    src = torch.arange(B, device=dev)
    src[rows] = B + torch.arange(rows.numel(), device=dev)
    x_out = out[:B]
    logp_x = logp[:B]
    if mode == "replace" and sel.any():
        # the selected rows train on their twin: only the other rows need x's targets
        keep_x = ~sel
        if keep_x.any():
            idx = keep_x.nonzero(as_tuple=True)[0]
            part = torch.empty((idx.numel(), T, V), dtype=logp.dtype, device=dev)
            fill(part, src[idx], twins["align"].to(dev)[idx], logp_x[idx], {k: v[idx] for k, v in sw.items()})
            x_out[idx] = part
    else:
        fill(x_out, src, twins["align"].to(dev), logp_x, sw)
    if mode == "off" or not sel.any():
        return out
    # the selected rows' twins: their own log-probs are the twin pass, their twin is x (row b of logp)
    pos = torch.full((B,), -1, dtype=torch.long, device=dev)
    pos[rows] = torch.arange(rows.numel(), device=dev)
    chosen = pos[sel]  # among the twin rows
    b_of = rows[chosen]  # their row in x
    inv = twins["align_inv"].to(dev)[b_of]
    # the twin pass's rows in order when every twin row is trained on (p 1): a view, no copy
    own_cf = logp[B:] if chosen.numel() == rows.numel() else logp[B:][chosen]
    tsw = {k: v[chosen] for k, v in tw.items()}
    if mode == "append":
        fill(out[B:], b_of, inv, own_cf, tsw)
        return out
    part = torch.empty((chosen.numel(), T, V), dtype=logp.dtype, device=dev)
    fill(part, b_of, inv, own_cf, tsw)
    x_out[sel] = part
    return out


def own_rows(selected: torch.Tensor, twin_rows: torch.Tensor, mode: str) -> torch.Tensor:
    """For each student row of a micro-batch (x's B rows, then the appended twins of `selected` for
    `mode: append`; twins in place of their row for `replace`), the row of the teacher's pass (x, then the twins
    of `twin_rows` in row order) that holds the teacher's own distribution for it. [B] bool -> [B + k] long."""
    B = twin_rows.shape[0]
    pos = torch.full((B,), -1, dtype=torch.long)
    pos[twin_rows.cpu()] = B + torch.arange(int(twin_rows.sum()))
    x_rows, sel = torch.arange(B), selected.cpu()
    if mode == "append":
        return torch.cat([x_rows, pos[sel]])
    if mode == "replace":
        return torch.where(sel, pos, x_rows)
    return x_rows


@torch.no_grad()
def changed_positions(logq: torch.Tensor, logp: torch.Tensor, own: torch.Tensor, tv: float) -> torch.Tensor:
    """[R, T] bool: positions where the target q of a student row differs from the teacher's own distribution p
    for it (row `own[r]` of logp) by a total variation 0.5 * sum |q - p| >= tv. logq [R, T, V], logp [B + k, T, V];
    one row at a time, so no second [R, T, V] tensor exists."""
    out = torch.zeros(logq.shape[:2], dtype=torch.bool, device=logq.device)
    for r in range(logq.shape[0]):
        d = (logq[r].float().exp() - logp[int(own[r])].float().exp()).abs().sum(-1)
        out[r] = 0.5 * d >= tv
    return out

"""Textbook implementations the tests check the package's batched, chunked code against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.counterfactual.exchange import Exchange
from distill.counterfactual.perturb import perturbed_log_targets


def kd_reference(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Full-vocabulary KD with `F.kl_div`, mean over valid tokens."""
    mask = labels != -100
    s = F.log_softmax(student_logits[mask].float() / temperature, -1)
    t = F.log_softmax(teacher_logits[mask].float() / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="sum") * temperature**2 / mask.sum()


@torch.no_grad()
def teacher_targets(
    teacher_logits: torch.Tensor,
    twin_logits: torch.Tensor | None,
    align: torch.Tensor | None,
    pi: torch.Tensor | Exchange,
    g_mask: torch.Tensor | None,
    kind: str,
    lam: float,
    temperature: float,
    wordstart: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    pair: torch.Tensor | None = None,
) -> torch.Tensor:
    """log q for the rows whose logits are `teacher_logits` [B, T, V], one row and its twin at a time.

    twin_logits [B, T2, V] are the teacher's logits on each row's twin and `align` [B, T] maps each position of the
    row to the twin's corresponding position (-1: none). For a twin row, pass the roles exchanged (the twin's
    logits as `teacher_logits`, the original's as `twin_logits`, the inverse alignment and the twin's switches).
    A row with nothing to swap is its own twin: pass its logits as both, with the identity alignment.
    """
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    twin_logp = None if twin_logits is None else torch.log_softmax(twin_logits.float() / temperature, dim=-1)
    return perturbed_log_targets(
        logp, twin_logp, align, pi, g_mask, kind, lam, wordstart=wordstart, keep=keep, pair=pair
    )


def step_reference(item, logits: torch.Tensor, ex, kind: str, lam: float, temperature: float, mode: str):
    """The log-targets [T, V] of every student row of `item` (a `StepBatch`), row by row with `teacher_targets`:
    x's rows (each with its twin's pass, or with itself when it has nothing to swap), then per `mode`
    (`augment.mode`) the selected rows' twins appended after them or in their place. `logits` [B + k, T, V]: the
    teacher on `item.teacher_inputs()`. A list with one tensor per student row."""
    B = item.x.shape[0]
    twin_of = {b: B + j for j, b in enumerate(item.twin_rows.nonzero(as_tuple=True)[0].tolist())}
    names = ("wordstart", "keep", "pair")

    def ref_x(b):
        sw = {n: item.twins[n][b : b + 1] for n in names}
        zt = logits[twin_of[b] : twin_of[b] + 1] if b in twin_of else logits[b : b + 1]
        align = item.twins["align"][b : b + 1]
        return teacher_targets(logits[b : b + 1], zt, align, ex, None, kind, lam, temperature, **sw)[0]

    def ref_twin(b):
        tw = {n: item.twins["twin_" + n][b : b + 1] for n in names}
        zt = logits[twin_of[b] : twin_of[b] + 1]
        inv = item.twins["align_inv"][b : b + 1]
        return teacher_targets(zt, logits[b : b + 1], inv, ex, None, kind, lam, temperature, **tw)[0]

    sel = item.selected.tolist()
    if mode == "append":
        return [ref_x(b) for b in range(B)] + [ref_twin(b) for b in range(B) if sel[b]]
    if mode == "replace":
        return [ref_twin(b) if sel[b] else ref_x(b) for b in range(B)]
    return [ref_x(b) for b in range(B)]

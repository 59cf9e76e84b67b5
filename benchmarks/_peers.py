"""The peers `bench_step.py` compares fairdistill's plain-KD step against: the loss each computes on full student
logits, the way a user would otherwise write the step. TRL's only where `trl` imports (pip install -e ".[bench]")."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

PEERS = ("trl_kd", "hf_kd")


def have_trl() -> bool:
    try:
        from trl.experimental.gkd import GKDTrainer  # noqa: F401
    except Exception:
        return False
    return True


def trl_loss(s_logits, t_logits, labels, T):
    """TRL's generalized JSD at beta = 0 (KL(teacher || student)) on the valid positions, as a sum x T^2."""
    from trl.experimental.gkd import GKDTrainer

    return (
        GKDTrainer.generalized_jsd_loss(s_logits, t_logits, labels, beta=0.0, temperature=T, reduction="sum")
        * T**2
    )


def hf_distiller_loss(s_logits, t_logits, labels, T):
    """The HF distiller's KD term: the valid positions selected, KLDivLoss(batchmean) between the softened
    full-vocabulary distributions, x T^2; returned as a sum over positions like the others."""
    m = labels != -100
    s, t = s_logits[m], t_logits[m]
    kl = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / T, dim=-1), F.softmax(t / T, dim=-1))
    return kl * T**2 * s.shape[0]

"""The student's side of a step: its forward on a `StepBatch` and the KD + CE sums against the teacher's `Targets`.

Fused (`kd.fused`, the default where it applies): the student's output projection is folded into the chunked loss
(`distill.training.fused_loss`), so its [B, T, V] logits are never formed; else `distill.training.losses.kd_ce_sums` on full logits.
"""

from __future__ import annotations

import logging

from distill.core.config import Config
from distill.counterfactual.twins import StepBatch
from distill.teacher.targets import Targets
from distill.training.fused_loss import fused_kd_ce_sums
from distill.training.losses import LossSums, kd_ce_sums

log = logging.getLogger("distill")


def fused_head(cfg: Config, accelerator, student):
    """(use the fused loss?, the student's output projection): off under FSDP and DeepSpeed, whose sharded head
    weight exists whole only inside the forward, and for a model whose forward has no `logits_to_keep`."""
    import inspect

    from accelerate.utils import DistributedType

    if not cfg.kd.fused or accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return False, None
    model = accelerator.unwrap_model(student)
    head = model.get_output_embeddings()
    if head is None or "logits_to_keep" not in inspect.signature(model.forward).parameters:
        log.warning(
            "%s has no logits_to_keep or output head: the loss runs on full logits", type(model).__name__
        )
        return False, None
    return True, head


def student_loss_sums(
    student, head, batch: StepBatch, targets: Targets, cfg: Config, device, accelerator, sides=None
) -> LossSums:
    """Student forward on the batch's student rows and the KD + CE sums: fused with `head` (the output projection)
    when given, else on the full logits. `targets.logits` / `targets.hidden` (fused path only) are raw teacher
    tensors the fused loss forms q from a chunk at a time. With `kd.changed_weight` w != 1 and `targets.changed`,
    the KD sum counts the changed positions w times: KD + (w - 1) * KD(changed positions), from the same forward.
    With `sides` (`kd.log_ratio` > 0) the sums carry the log-ratio term, from the same forward."""
    ids, mask = batch.student_ids.to(device), batch.student_mask.to(device)
    labels = batch.labels.to(device)
    T, a, w = cfg.kd.temperature, cfg.kd.alpha, cfg.kd.changed_weight
    extra = targets.changed is not None and w != 1.0 and targets.logq is not None
    only_changed = labels.masked_fill(~targets.changed.to(device), -100) if extra else None
    with accelerator.autocast():
        if head is None:
            logits = student(input_ids=ids, attention_mask=mask).logits
            sums = kd_ce_sums(logits, targets.logq, labels, T, cfg.kd.chunk_size)
            if extra:
                sums.kd = (
                    sums.kd
                    + (w - 1.0) * kd_ce_sums(logits, targets.logq, only_changed, T, cfg.kd.chunk_size).kd
                )
            if sides is not None:
                sums.log_ratio = _log_ratio(labels, None, None, logits, targets, sides, cfg)
            return sums
        out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1]
        sums = fused_kd_ce_sums(
            hidden,
            head.weight,
            targets.logq,
            labels,
            T,
            cfg.kd.chunk_size,
            bias=head.bias,
            teacher_logits=targets.raw,
            teacher_head=targets.head,
            grad_weights=(a, 1 - a) if targets.has_teacher else (0.0, 1.0),
        )
        if extra:
            # only the KD sum of this second pass over the changed positions enters the loss (its CE does not)
            more = fused_kd_ce_sums(
                hidden,
                head.weight,
                targets.logq,
                only_changed,
                T,
                cfg.kd.chunk_size,
                bias=head.bias,
                grad_weights=(a * (w - 1.0), 0.0),
            )
            sums.kd = sums.kd + (w - 1.0) * more.kd
        if sides is not None:
            sums.log_ratio = _log_ratio(labels, hidden, head, None, targets, sides, cfg)
        return sums


def _log_ratio(labels, hidden, head, logits, targets: Targets, sides, cfg: Config):
    """The log-ratio term over the loss positions (labels != -100) of the student rows: from the student's final
    hidden states and head (fused) or its logits, against the targets' log-ratios. A [rows, V] tensor is cut to
    G's columns before its rows are picked, so no [N, V] copy is made."""
    from distill.training.log_ratio import log_ratio_sum, student_columns, target_columns

    valid = labels != -100
    rows = valid.reshape(-1).nonzero(as_tuple=True)[0]
    cols = sides.cols

    def flat(x, columns=None):
        if x is None:
            return None
        x = x.reshape(-1, x.shape[-1])
        if columns is not None:
            x = x[:, columns.to(x.device)]
        return x.index_select(0, rows.to(x.device))

    if logits is not None:
        z = flat(logits, cols).float()
    else:
        z = student_columns(flat(hidden), head.weight, head.bias, None, cols)
    if targets.logq is not None:
        q = flat(targets.logq, cols).float()
    else:
        q = target_columns(
            None,
            flat(targets.logits),
            flat(targets.hidden),
            targets.head,
            cols.to(z.device),
            cfg.kd.temperature,
        )
    return log_ratio_sum(z, q.to(z.device), sides.to(z.device), cfg.kd.temperature, cfg.kd.log_ratio_mass)

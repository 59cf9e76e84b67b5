"""The teacher's side of a step: `targets(batch)` -> `Targets`, from the live teacher or from its cache.

    LiveTeacher     one forward over x and the twins of the batch's `twin_rows` (one pass, both worlds)
    CachedTeacher   the same rows read from `teacher.cache` (`distill.teacher.cache`: hidden states or top-k)
    NoTeacher       kd.alpha 0 and no counterfactuals: plain cross-entropy, nothing to ask the teacher

Whatever the source, the perturbed targets are assembled by `distill.counterfactual.perturb.step_targets`. With plain KD and the
fused loss, the teacher's logits (or cached hidden states and its output projection) go to the loss as they are,
and the loss forms q a chunk at a time: no [N, V] target tensor exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.counterfactual.perturb import changed_positions, own_rows, step_targets
from distill.counterfactual.twins import Counterfactuals, StepBatch


@dataclass
class Targets:
    """What the loss compares the student with; at most one of `logq`, `logits`, `hidden` is set (none: CE only)."""

    logq: torch.Tensor | None = None
    """[B + k, T, V] log-targets at the KD temperature, one row per student row."""
    logits: torch.Tensor | None = None
    """[B, T, V] the teacher's raw logits (plain KD, fused loss)."""
    hidden: torch.Tensor | None = None
    """[B, T, H] the teacher's final hidden states (plain KD, fused loss, `hidden` cache), with `head`."""
    head: tuple[torch.Tensor, torch.Tensor | None] | None = None
    """The teacher's output projection (weight [V, H], bias) that turns `hidden` into logits."""
    changed: torch.Tensor | None = None
    """[B + k, T] bool, with `kd.changed_weight` != 1: the positions whose target the modification changed."""

    @property
    def raw(self) -> torch.Tensor | None:
        """The teacher tensor the fused loss forms q from, when `logq` is not given."""
        return self.logits if self.logits is not None else self.hidden

    @property
    def has_teacher(self) -> bool:
        return self.logq is not None or self.raw is not None


class NoTeacher:
    """kd.alpha 0 and no counterfactuals: the loss is cross-entropy alone."""

    def targets(self, batch: StepBatch) -> Targets:
        return Targets()


def batch_targets(batch: StepBatch, logp: torch.Tensor, cf: Counterfactuals | None) -> torch.Tensor:
    """The student's log-targets from the teacher's log-probabilities at the KD temperature of the batch's teacher
    rows, logp [B + k, T, V] (x rows, then the twins of `batch.twin_rows`): `distill.counterfactual.perturb.step_targets` with the
    recipe's kind, lam and augment mode; plain KD (no `cf`): x's rows as they are."""
    if cf is None:
        return step_targets(logp, None, None, None, None, "none", 0.0, "off")
    ex = cf.exchange(logp.device)
    return step_targets(logp, batch.twins, batch.selected, batch.twin_rows, ex, cf.kind, cf.lam, cf.mode)


def modified_targets(
    batch: StepBatch, logp: torch.Tensor, cf: Counterfactuals | None, changed_tv: float | None
) -> Targets:
    """`batch_targets` as `Targets`; with `changed_tv` (`kd.changed_weight` != 1) also the positions whose target
    moved from the teacher's own distribution by at least that total variation."""
    logq = batch_targets(batch, logp, cf)
    if changed_tv is None or cf is None:
        return Targets(logq=logq)
    own = own_rows(batch.selected, batch.twin_rows, cf.mode)
    return Targets(logq=logq, changed=changed_positions(logq, logp, own, changed_tv))


class LiveTeacher:
    """The frozen teacher run on the batch's teacher rows (`StepBatch.teacher_inputs`) under the run's autocast.
    `raw_ok`: the loss takes raw teacher logits (the fused loss, plain KD)."""

    def __init__(
        self,
        model,
        accelerator,
        temperature: float,
        cf: Counterfactuals | None,
        raw_ok: bool,
        changed_tv: float | None = None,
    ):
        self.model, self.accelerator, self.temperature = model, accelerator, temperature
        self.cf, self.device, self.raw_ok, self.changed_tv = cf, accelerator.device, raw_ok, changed_tv

    def targets(self, batch: StepBatch) -> Targets:
        ids, mask = batch.teacher_inputs()
        with torch.no_grad(), self.accelerator.autocast():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        if self.cf is None and self.raw_ok:  # plain KD: the fused loss forms q chunk by chunk from the logits
            return Targets(logits=logits)
        logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
        return modified_targets(batch, logp, self.cf, self.changed_tv)


class CachedTeacher:
    """The teacher's targets read from its cache (`distill.teacher.cache.TeacherCache`) by block index. A `hidden`
    cache needs the teacher's output projection `head`, in the dtype the cache holds."""

    def __init__(
        self, cache, head, device, cf: Counterfactuals | None, raw_ok: bool, changed_tv: float | None = None
    ):
        self.cache, self.head = cache, head
        self.cf, self.device, self.raw_ok, self.changed_tv = cf, device, raw_ok, changed_tv

    def targets(self, batch: StepBatch) -> Targets:
        if self.cf is None and self.raw_ok and self.head is not None:
            # plain KD, fused loss: the hidden states go in as they are, the loss forms their logits per chunk
            return Targets(hidden=self.cache.hidden(batch.blocks, []).to(self.device), head=self.head)
        with torch.no_grad():
            logp = self.cache.log_probs(batch.blocks, batch.twin_blocks(), self.head).to(self.device)
        return modified_targets(batch, logp, self.cf, self.changed_tv)


def open_cache(cfg, teacher, tokenizer, train_blocks, accelerator, cf: Counterfactuals | None):
    """The run's teacher cache and, for the `hidden` format, the teacher's head on the device in the cache's dtype
    (bf16 under bf16 autocast: the one the live lm_head multiplied in). Call before the teacher is sharded: the main
    process runs it whole over the blocks once."""
    from distill.teacher.cache import open_or_build, teacher_head

    cache = open_or_build(cfg, teacher, tokenizer, train_blocks, accelerator.device, accelerator, cf)
    head = None
    if cache.format == "hidden":
        head = tuple(
            t.to(accelerator.device, cache.dtype) if t is not None else None for t in teacher_head(teacher)
        )
    return cache, head


def shard_teacher(accelerator, teacher):
    """Shard the frozen teacher the way the student is sharded, where the engine shards (FSDP; DeepSpeed ZeRO-3);
    elsewhere keep the full copy each process holds. The teacher never goes through `accelerator.prepare`, so it
    gets no optimizer state, no gradient buckets and no place in checkpoints (as TRL prepares reference models)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        if plugin.fsdp_version == 2:
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model

            teacher = fsdp2_prepare_model(accelerator, teacher)
        else:
            from torch.distributed.fsdp import FullyShardedDataParallel

            plugin.set_auto_wrap_policy(teacher)
            teacher = FullyShardedDataParallel(
                teacher,
                sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
                cpu_offload=plugin.cpu_offload,
                auto_wrap_policy=plugin.auto_wrap_policy,
                mixed_precision=plugin.mixed_precision_policy,
                sync_module_states=plugin.sync_module_states,
                forward_prefetch=plugin.forward_prefetch,
                use_orig_params=plugin.use_orig_params,
                limit_all_gathers=plugin.limit_all_gathers,
                device_id=accelerator.device,
            )
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        import copy

        import deepspeed

        # ZeRO-3 partitions the teacher like the student; below it, a stage-0 engine keeps a full copy. Either way
        # DeepSpeed casts it to the run's precision, as it does the student (it runs no autocast).
        config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
        if config["zero_optimization"]["stage"] != 3:
            config["zero_optimization"]["stage"] = 0
        teacher, *_ = deepspeed.initialize(model=teacher, config=config)
    return teacher.eval().requires_grad_(False)

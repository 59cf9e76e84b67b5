"""`train(cfg)`: the whole distillation run, top to bottom.

setup (run dir, models, data, counterfactuals, optimizer) -> loop over optimizer steps:
    fetch grad_accum micro-batches -> count the step's tokens (all processes) ->
    per micro-batch: teacher on x and on the twins x~ of changed rows (one forward) -> perturbed targets ->
    student forward -> KD + CE sums / step tokens -> backward
    -> clip, step, schedule -> every N steps: metrics line, validation, pronoun probe, checkpoint
-> final checkpoint, `final/` (save_pretrained + tokenizer + model card), optional evaluation suite.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from distill import her_decide
from distill.config import Config, config_to_yaml, load_config, save_config
from distill.errors import ConfigError, FairDistillError
from distill.fused_loss import fused_kd_ce_sums
from distill.losses import combine, kd_ce_sums, next_token_labels
from distill.perturb import NEEDS_TWIN, Exchange, perturbed_log_targets
from distill.resources import resource_path
from distill.tracking import MetricsLog, finish_trackers, redact, wandb_init_kwargs, wandb_mode, wandb_run_id

log = logging.getLogger("distill")

CHECKPOINT_PREFIX = "step_"


# --------------------------------------------------------------------------------------------------------------
# Small pieces the loop uses


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def lr_lambda(step: int, total: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Linear warmup over `warmup_frac` of the steps, then cosine decay to `min_lr_frac` of the peak."""
    warmup = int(round(total * warmup_frac))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))


class MicroBatches:
    """Deterministic, resumable micro-batches of block indices for one process.

    Epoch e shuffles with seed + e; each global micro-batch of `micro_batch_size * world` blocks is split so
    process r takes its own slice: no overlap, and the same global batches whatever the process count.
    The position (epoch, index) is all a checkpoint needs to continue without seeing a batch twice.
    """

    def __init__(self, n: int, micro_batch_size: int, rank: int, world: int, seed: int):
        self.n, self.mbs, self.rank, self.world, self.seed = n, micro_batch_size, rank, world, seed
        self.per_epoch = n // (micro_batch_size * world)
        if self.per_epoch == 0:
            raise FairDistillError(
                f"{n} training blocks cannot fill one micro-batch of {micro_batch_size} x {world} processes; "
                "lower train.micro_batch_size or add data"
            )
        self.epoch, self.index = 0, 0

    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self):
        perm = self._perm(self.epoch)
        while True:
            if self.index >= self.per_epoch:
                self.epoch, self.index = self.epoch + 1, 0
                perm = self._perm(self.epoch)
            g = self.index * self.mbs * self.world + self.rank * self.mbs
            self.index += 1
            yield perm[g : g + self.mbs].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.index = int(s["epoch"]), int(s["index"])


def build_twins(cf: Counterfactuals, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The twins of rows x [B, T] (`distill.counterfactual.twin_batch`)."""
    from distill.counterfactual import twin_batch

    return twin_batch(cf.builder, x, cf.pad_id)


class TwinTable:
    """Precomputed twins of the training blocks, read a micro-batch at a time through safetensors' memory map."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        self._f = safe_open(str(path), framework="pt")

    def rows(self, blocks: list[int]) -> dict[str, torch.Tensor]:
        out = {}
        for k in self._f.keys():
            sl = self._f.get_slice(k)
            v = torch.cat([sl[b : b + 1] for b in blocks])
            out[k] = v if v.dtype == torch.bool else v.long()
        return out


class Counterfactuals:
    """Builds the twins of a micro-batch and decides which rows the student trains on."""

    def __init__(self, cfg: Config, tokenizer, rank: int = 0, world: int = 1):
        from distill.counterfactual import CounterfactualBuilder, g_word_groups, g_word_pairs
        from distill.swap import Swapper
        from distill.wordlists import load_lexicon

        a = cfg.augment
        lexicon = load_lexicon(a.pairs, a.one_to_many, a.names)
        self.swapper = Swapper(lexicon, use_names=a.names is not None)
        self.builder = CounterfactualBuilder(
            tokenizer,
            self.swapper,
            g_word_pairs(lexicon, use_names=a.names is not None),
            g_word_groups(lexicon),
        )
        self.pad_id = tokenizer.pad_token_id
        self.mode, self.p = a.mode, a.p
        self.kind, self.lam = cfg.perturb.kind, cfg.perturb.lam
        self.generator = torch.Generator().manual_seed(cfg.run.seed + 7919)
        self.rank, self.world = rank, world
        self.table: TwinTable | None = None
        self._exchange: dict[str, Exchange] = {}

    def twins(self, x: torch.Tensor, blocks: list[int] | None = None) -> dict[str, torch.Tensor]:
        """x: [B, T] -> twin ids/mask [B, T], align and inverse alignment [B, T], changed [B] (bool). With the
        rows' block indices and a `precompute`d table, read from the table instead of built."""
        if blocks is not None and self.table is not None:
            return self.table.rows(blocks)
        return build_twins(self, x)

    def precompute(self, cfg: Config, blocks: torch.Tensor) -> None:
        """Build the twins of every training block once, in `data.num_workers` processes, cached on disk by
        content (blocks, word lists, tokenizer); each step then reads its rows."""
        from distill.data import _digest, _tokenizer_fingerprint
        from distill.parallel import ordered_map

        a = cfg.augment
        words = [
            resource_path(f).read_text(encoding="utf-8") if f else None
            for f in (a.pairs, a.one_to_many, a.names)
        ]
        key = _digest(
            [
                "twins-2",
                hashlib.sha256(blocks.contiguous().numpy().tobytes()).hexdigest(),
                list(blocks.shape),
                words,
                _tokenizer_fingerprint(self.builder.tokenizer),
            ]
            + her_decide.key_part(cfg, self.builder)
        )
        path = Path(cfg.data.cache_dir) / "twins" / f"{key}.safetensors"
        if not path.is_file():
            t0 = time.perf_counter()
            chunks = (blocks[i : i + 64] for i in range(0, blocks.shape[0], 64))
            parts = list(ordered_map(build_twins, chunks, cfg.data.num_workers, self))
            table = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            table = {k: v if v.dtype == torch.bool else v.to(torch.int32) for k, v in table.items()}
            from distill.data import _atomic_save

            _atomic_save(table, path)
            dt = time.perf_counter() - t0
            log.info(
                "twins of %d blocks built in %.1f s (%.0f tokens/s, %d workers), %d changed; cached %s",
                blocks.shape[0],
                dt,
                blocks.numel() / max(dt, 1e-9),
                max(1, cfg.data.num_workers),
                int(table["changed"].sum()),
                path,
            )
        self.table = TwinTable(path)

    def exchange(self, device) -> Exchange:
        """The builder's exchange on `device`, moved once."""
        key = str(device)
        if key not in self._exchange:
            self._exchange[key] = self.builder.exchange.to(device)
        return self._exchange[key]

    def select(self, changed: torch.Tensor) -> torch.Tensor:
        """Rows whose twin the student sees (augment p); drawn for every row so the stream does not depend on data.
        Drawn for the whole global micro-batch (B rows per process), each process keeping its own slice, as
        `MicroBatches` slices the rows: the same choices as one process, not the same draws repeated per process."""
        B = changed.shape[0]
        draws = torch.rand(B * self.world, generator=self.generator)
        draw = draws[self.rank * B : (self.rank + 1) * B] < self.p
        return changed & draw if self.mode != "off" else torch.zeros_like(changed)

    def teacher_twin_rows(self, changed: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        return changed if self.kind in NEEDS_TWIN else selected


def build_step_inputs(x: torch.Tensor, cf: Counterfactuals | None, blocks: list[int] | None = None) -> dict:
    """Everything one micro-batch needs, decided before any forward so the step's token count is known.
    `blocks`: the rows' training-block indices, to read precomputed twins (`Counterfactuals.precompute`)."""
    mask = torch.ones_like(x)
    item = {"x": x, "x_mask": mask}
    if cf is None:
        item.update(student_ids=x, student_mask=mask, labels=next_token_labels(x, mask), changed_frac=0.0)
        return item
    tw = cf.twins(x, blocks)
    selected = cf.select(tw["changed"])
    twin_rows = cf.teacher_twin_rows(tw["changed"], selected)
    item.update(tw, selected=selected, twin_rows=twin_rows, changed_frac=float(tw["changed"].float().mean()))
    if cf.mode == "append":
        sid = torch.cat([x, tw["twin_ids"][selected]])
        smask = torch.cat([mask, tw["twin_mask"][selected]])
    elif cf.mode == "replace":
        sid = torch.where(selected[:, None], tw["twin_ids"], x)
        smask = torch.where(selected[:, None], tw["twin_mask"], mask)
    else:
        sid, smask = x, mask
    item.update(student_ids=sid, student_mask=smask, labels=next_token_labels(sid, smask))
    return item


def targets_for_step(
    item: dict, teacher_logits: torch.Tensor, cfg: Config, cf: Counterfactuals | None
) -> torch.Tensor:
    """Teacher log-targets for the student's rows. teacher_logits: [B + k, T, V] (x rows then the k twin rows).

    One log-softmax over all rows; the twin rows' targets reuse the same two distributions with the roles
    exchanged (no extra teacher pass).
    """
    logp = torch.log_softmax(teacher_logits.float() / cfg.kd.temperature, dim=-1)
    return targets_from_log_probs(item, logp, cf)


def targets_from_log_probs(item: dict, logp: torch.Tensor, cf: Counterfactuals | None) -> torch.Tensor:
    """`targets_for_step` from the teacher's log-probabilities at the KD temperature, [B + k, T, V] (from a live
    forward, or rebuilt from `teacher.cache`)."""
    B = item["x"].shape[0]
    logp_x = logp[:B]
    if cf is None:
        return logp_x
    dev = logp.device
    ex = cf.exchange(dev)
    sw = {k: item[k].to(dev) for k in ("wordstart", "keep", "pair")}
    rows = item["twin_rows"].nonzero(as_tuple=True)[0].to(dev)
    tw = {k: item["twin_" + k].to(dev)[rows] for k in ("wordstart", "keep", "pair")}
    logp_cf = logp[B:]
    logq_x, logq_cf = logp_x, None
    if cf.kind == "pair_equalize":
        logq_x = perturbed_log_targets(logp_x, None, None, ex, None, cf.kind, cf.lam, **sw)
        if rows.numel():
            logq_cf = perturbed_log_targets(logp_cf, None, None, ex, None, cf.kind, cf.lam, **tw)
    else:
        if cf.kind in NEEDS_TWIN:
            # Every row has a twin: a changed row's is the teacher's pass on x~, an unchanged row's is x itself
            # (x~ = x; its alignment is the identity), so the formula applies there too at no extra forward.
            src = torch.arange(B, device=dev)
            src[rows] = B + torch.arange(rows.numel(), device=dev)
            logq_x = perturbed_log_targets(
                logp_x, logp, item["align"].to(dev), ex, None, cf.kind, cf.lam, twin_rows=src, **sw
            )
        if rows.numel():
            inv = item["align_inv"].to(dev)[rows]
            logq_cf = perturbed_log_targets(
                logp_cf, logp_x, inv, ex, None, cf.kind, cf.lam, twin_rows=rows, **tw
            )
    sel = item["selected"].to(dev)
    if cf.mode == "off" or not sel.any():
        return logq_x
    # position of each selected row among the twin rows
    pos = torch.full((B,), -1, dtype=torch.long, device=dev)
    pos[rows] = torch.arange(rows.numel(), device=dev)
    twin_targets = logq_cf[pos[sel]]
    if cf.mode == "append":
        return torch.cat([logq_x, twin_targets])
    out = logq_x.clone()
    out[sel] = twin_targets
    return out


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
    student, head, item, targets, raw_logits, cfg: Config, device, accelerator, teacher_head=None
):
    """Student forward on the step's rows and the KD + CE sums: fused with `head` (the output projection) when
    given, so the student's logits are never formed, else `kd_ce_sums` on the full logits. `raw_logits`: the
    teacher's logits in place of `targets` (plain KD, fused path only), or with `teacher_head` (weight, bias) its
    final hidden states, whose logits the fused loss then forms a chunk at a time."""
    ids, mask = item["student_ids"].to(device), item["student_mask"].to(device)
    labels = item["labels"].to(device)
    T, a = cfg.kd.temperature, cfg.kd.alpha
    with accelerator.autocast():
        if head is None:
            logits = student(input_ids=ids, attention_mask=mask).logits
            return kd_ce_sums(logits, targets, labels, T, cfg.kd.chunk_size)
        out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
        return fused_kd_ce_sums(
            out.hidden_states[-1],
            head.weight,
            targets,
            labels,
            T,
            cfg.kd.chunk_size,
            bias=head.bias,
            teacher_logits=raw_logits,
            teacher_head=teacher_head,
            grad_weights=(a, 1 - a) if (targets is not None or raw_logits is not None) else (0.0, 1.0),
        )


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those holding the `complete` marker), oldest first."""
    ckpt_root = run_dir / "checkpoints"
    if not ckpt_root.is_dir():
        return []
    done = [
        p
        for p in ckpt_root.iterdir()
        if p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / "complete").is_file()
    ]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (header unreadable, or tensors reaching past its end), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n > size - 8:
                return f"{path.name}: {size} bytes, too short for its header"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"{path.name}: unreadable header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{path.name}: {size} bytes, its header describes {8 + n + end}"
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a complete-marked checkpoint cannot be resumed from (a file missing, truncated or of another size than
    when it was saved; a safetensors header unreadable), or None when it is whole."""
    try:
        marker = json.loads((ckpt / "complete").read_text())
    except (OSError, ValueError):
        marker = None
    files = marker.get("files", {}) if isinstance(marker, dict) else {}  # older checkpoints: step number only
    for name, size in files.items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name}: {f.stat().st_size} bytes, {size} when saved"
    for f in sorted(ckpt.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            return problem
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json unreadable ({type(e).__name__})"
    return None


def resumable_checkpoint(run_dir: Path, main: bool = True) -> Path | None:
    """The newest whole checkpoint. Newer damaged ones are named in a warning and, by the main process, moved aside
    to `checkpoints/damaged_step_N` (kept for inspection, out of rotation and never resumed from)."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        aside = ckpt.with_name(f"damaged_{ckpt.name}")
        n = 1
        while aside.exists():
            aside, n = ckpt.with_name(f"damaged_{ckpt.name}.{n}"), n + 1
        if main:
            os.replace(ckpt, aside)
            log.warning(
                "checkpoint %s is damaged (%s); moved to %s, resuming from an older one", ckpt, problem, aside
            )
    return None


def _disk_full(e: BaseException) -> bool:
    """ENOSPC, raised as OSError by Python and torch, or inside safetensors' own error text."""
    text = str(e)
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left" in text or "StorageFull" in text


def _disk_full_error(run_dir: Path, what: str) -> FairDistillError:
    good = list_checkpoints(run_dir)
    kept = f"the last good checkpoint {good[-1].name} is intact" if good else "no checkpoint was written yet"
    return FairDistillError(
        f"no space left under {run_dir} while writing {what}; the partial copy was removed and {kept}. Free some "
        "space (or lower train.keep_last) and rerun the same command to resume"
    )


def drop_tied_weights(models, weights, output_dir) -> None:
    """`accelerator.save_state` pre-hook: leave out the weights a model ties to another (the output projection tied to
    the input embeddings), as `save_pretrained` does; loading re-ties them. Left in, safetensors cannot hold the
    alias and Accelerate drops it itself with a warning."""
    for model, state in zip(models, weights):
        tied = getattr(getattr(model, "module", model), "_tied_weights_keys", None) or {}
        if not isinstance(state, dict):
            continue
        for name, source in tied.items() if isinstance(tied, dict) else []:
            a, b = state.get(name), state.get(source)
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr():
                del state[name]


def save_checkpoint(accelerator, run_dir: Path, step: int, extra: dict, keep_last: int) -> Path:
    """accelerator.save_state into a temporary folder, renamed into place, marked complete last; the marker
    records every file's size so a later resume can tell a damaged checkpoint from a whole one. A full disk
    removes the partial folder and stops with one message; the checkpoints already written stay as they were."""
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = ckpt_root / f".tmp_{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        torch.save(extra["rng"], tmp / f"loop_rng_{accelerator.process_index}.pt")
        # Fault-injection hook for the kill tests: hold the half-written checkpoint open for a moment.
        pause = float(os.environ.get("FAIRDISTILL_PAUSE_IN_CHECKPOINT", "0") or 0)
        if pause > 0:
            time.sleep(pause)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(extra["state"]))
            files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            (final / "complete").write_text(json.dumps({"step": step, "files": files}))
            (ckpt_root / "latest").write_text(final.name)
    except Exception as e:
        if not _disk_full(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "complete").is_file():
            shutil.rmtree(final, ignore_errors=True)
        raise _disk_full_error(run_dir, f"checkpoint {final.name}") from None
    if accelerator.is_main_process:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def peak_disk_bytes(
    n_params: int, keep_last: int, total_steps: int | None, save_every: int
) -> dict[str, int]:
    """What a run writes at its peak, in bytes: `keep` complete checkpoints while one more is being written, plus
    `final/`. A checkpoint holds the float32 weights and AdamW's two moments (12 bytes a parameter); `final/` the
    weights and the tokenizer. The small files (logs, W&B, probe tables) get a fixed allowance."""
    checkpoint = 12 * n_params + 2**20
    final = 4 * n_params + 8 * 2**20
    saves = keep_last + 1
    if total_steps is not None:
        saves = -(-total_steps // save_every) if save_every else 1
    keep = min(keep_last, max(saves - 1, 0))
    return {
        "checkpoint": checkpoint,
        "final": final,
        "keep": keep,
        "peak": (keep + 1) * checkpoint + final + 16 * 2**20,
    }


# --------------------------------------------------------------------------------------------------------------
# Evaluation during training


@torch.no_grad()
def validation_loss(model, blocks: torch.Tensor, batch_size: int, device, accelerator) -> float:
    """Token-weighted mean next-token CE of `model` on `blocks` [N, T] (split across processes, then reduced)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    shard = blocks[accelerator.process_index :: accelerator.num_processes]
    # Every process runs the same number of forwards: under FSDP or ZeRO-3 each forward gathers weights from all
    # of them. A process whose shard ran out repeats one block and counts it with weight 0.
    n_batches = math.ceil(math.ceil(blocks.shape[0] / accelerator.num_processes) / batch_size)
    for i in range(0, n_batches * batch_size, batch_size):
        x, weight = shard[i : i + batch_size], 1.0
        if x.shape[0] == 0:
            x, weight = blocks[:1], 0.0
        x = x.to(device)
        labels = next_token_labels(x)
        with accelerator.autocast():
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits  # blocks are never padded
        s = kd_ce_sums(logits, None, labels, 1.0)
        total += weight * torch.tensor([s.ce.item(), s.tokens], device=device, dtype=torch.float64)
    total = accelerator.reduce(total, reduction="sum")
    if was_training:
        model.train()
    return float(total[0] / total[1].clamp(min=1))


def run_probe(model, tokenizer, cfg: Config, device) -> dict:
    from distill.evaluation.probe import load_templates, pronoun_probe
    from distill.wordlists import load_professions

    professions = load_professions(cfg.probe.professions)[: cfg.probe.max_professions]
    templates = load_templates(cfg.probe.templates)
    was_training = model.training
    model.eval()
    out = pronoun_probe(model, tokenizer, professions, templates, device=device)
    if was_training:
        model.train()
    return out


def run_stereo_probe(model, tokenizer, cfg: Config, device, teacher_scores=None) -> tuple[dict, dict]:
    """Occupational-stereotype probe on Winogender (`probe/stereo_*`); ({}, {}) when `probe.winogender` is null."""
    if not cfg.probe.winogender:
        return {}, {}
    from distill.evaluation.stereotype import live_probe, load_occupation_stats, load_templates

    folder = cfg.probe.winogender
    return live_probe(
        model, tokenizer, load_templates(folder), load_occupation_stats(folder), teacher_scores, device
    )


# --------------------------------------------------------------------------------------------------------------
# The run


# Settings a resumed run may change: how long, how often to log/evaluate/save, how the loss and the teacher's
# targets are computed (same values), where W&B goes. Everything else must match the run's config.yaml.
RESUMABLE_CHANGES = {
    "run": ("label",),
    "train": ("max_steps", "max_tokens", "log_every", "eval_every", "probe_every", "save_every", "keep_last"),
    "eval": ("suite",),
    "kd": ("chunk_size", "fused"),
    "data": ("num_workers", "cache_dir"),
    "teacher": ("cache", "cache_format", "cache_top_k"),
    "tracking": None,
}


def _saved_config(path: Path) -> dict:
    """A run's config.yaml with today's defaults filled in for keys it predates (so an upgrade can resume)."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    try:
        return yaml.safe_load(config_to_yaml(load_config(path)))
    except Exception:
        return raw


def _recipe_of(d: dict) -> dict:
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for section, keys in RESUMABLE_CHANGES.items():
        if keys is None:
            d.pop(section, None)
        elif isinstance(d.get(section), dict):
            for k in keys:
                d[section].pop(k, None)
    return d


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _recipe_differences(saved: dict, now: dict) -> str:
    a, b = _flat(saved), _flat(now)
    diffs = [
        f"{k}: {a.get(k)!r} there, {b.get(k)!r} now"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    more = f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""
    return "; ".join(diffs[:5]) + more


def prepare_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """Create or reopen the run directory; refuse a different recipe in an existing one. Returns (dir, the
    checkpoint to resume from or None). Damaged newer checkpoints are skipped with a warning."""
    root = Path(cfg.run.output_dir).expanduser().resolve()
    run_dir = (root / cfg.run.name).resolve()
    if root not in run_dir.parents:
        raise ConfigError(f"run.name {cfg.run.name!r} escapes run.output_dir {str(root)!r}")
    saved = run_dir / "config.yaml"
    if saved.is_file() and list_checkpoints(run_dir):
        if cfg.run.resume == "never":
            raise ConfigError(
                f"run directory {run_dir} already holds checkpoints and run.resume is 'never'; "
                f"pick another run.name or delete the folder"
            )
        before, now = _recipe_of(_saved_config(saved)), _recipe_of(yaml.safe_load(config_to_yaml(cfg)))
        if before != now:
            raise ConfigError(
                f"run directory {run_dir} was started with a different recipe ({_recipe_differences(before, now)}); "
                f"resume it with the same recipe, or start a new run with run.name=<new name>"
            )
        ckpt = resumable_checkpoint(run_dir, main=int(os.environ.get("RANK", "0")) == 0)
        if ckpt is None:  # starting over would drop the run's metrics.jsonl: leave that to the user
            raise FairDistillError(
                f"every checkpoint in {run_dir / 'checkpoints'} is damaged (kept as damaged_step_N); start a new run "
                "with run.name=<new name>, or delete the folder to start this one over"
            )
        return run_dir, ckpt
    return run_dir, None


def _bytes_under(*folders: Path) -> int:
    return sum(f.stat().st_size for d in folders if d.is_dir() for f in d.rglob("*") if f.is_file())


def _peak_disk(cfg: Config, n_params: int) -> dict:
    """`peak_disk_bytes` for this run; a token budget's step count is known only after the data: assume the most."""
    return peak_disk_bytes(n_params, cfg.train.keep_last, cfg.train.max_steps, cfg.train.save_every)


def _check_writable(run_dir: Path, need: dict | None = None) -> None:
    """The run directory can be written, and (with `need`, from `peak_disk_bytes`) its filesystem has room for the
    run's peak less what its checkpoints and final/ already hold."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise FairDistillError(
            f"run directory {run_dir} is not writable ({e.strerror}); set run.output_dir to a writable folder"
        ) from None
    if need is None:
        return
    free = shutil.disk_usage(run_dir).free
    missing = need["peak"] - _bytes_under(run_dir / "checkpoints", run_dir / "final")
    if free < missing:
        mib = 2**20
        raise FairDistillError(
            f"only {free / mib:.0f} MiB free under {run_dir}; this run needs about {missing / mib:.0f} MiB more at "
            f"its peak ({need['keep']} kept checkpoint(s) and one being written, {need['checkpoint'] / mib:.0f} MiB "
            f"each, plus final/ of {need['final'] / mib:.0f} MiB). Free some space, lower train.keep_last, or set "
            "run.output_dir elsewhere"
        )


def train(cfg: Config, stop_after: int | None = None, keep_tracking: bool = False) -> Path:
    """Run `cfg` to the end (or, with `stop_after`, leave after the first checkpoint at or past that step, as a
    preempted job would; tests use it). Returns the run directory. `keep_tracking`: leave the W&B run open for the
    evaluation that follows in this process (`tracking.log_evaluation` logs into it and finishes it)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs, set_seed
    from tqdm.auto import tqdm

    from distill.data import build_blocks
    from distill.models import build_student, check_prune, check_tokenizers, load_teacher, prune_layers

    # ---- setup -------------------------------------------------------------------------------------------------
    run_dir, resume_ckpt = prepare_run_dir(cfg)
    resume_step = int(resume_ckpt.name[len(CHECKPOINT_PREFIX) :]) if resume_ckpt is not None else None
    from distill.precision import resolve_mixed_precision

    mp, mp_reason = resolve_mixed_precision(cfg.train.mixed_precision)
    use_wandb = cfg.tracking.wandb and wandb_mode(cfg.tracking.mode) != "disabled"
    # Several processes and no CUDA device (torchrun, or `accelerate launch` on a CPU machine): ask for the CPU, so
    # Accelerate joins them with gloo instead of leaving each to train alone into the same run directory.
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        mixed_precision=mp,
        log_with="wandb" if use_wandb else None,
        project_dir=str(run_dir),
        cpu=launched > 1 and not torch.cuda.is_available(),
        # The loop steps the LR schedule once per optimizer step. Left on, Accelerate would step it num_processes
        # times per call (it assumes each process's batch shrank), ending the schedule early on several processes.
        step_scheduler_with_optimizer=False,
        # The other processes wait in a barrier while the main one builds the data cache (tokenizing millions of
        # documents the first time) or writes a large checkpoint: far longer than NCCL's 10-minute default.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(hours=2))],
    )
    if launched > 1 and accelerator.num_processes != launched:
        raise FairDistillError(
            f"{launched} processes were launched (WORLD_SIZE) but Accelerate joined {accelerator.num_processes}; "
            "check the accelerate config's distributed_type, or set ACCELERATE_USE_CPU=true to run them on CPUs"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed steps its optimizer inside every backward unless told where accumulation ends, and this loop
        # accumulates by itself; no DataLoader goes through `prepare`, so it is also told the micro-batch.
        if cfg.train.grad_accum != 1:
            raise FairDistillError(
                f"train.grad_accum={cfg.train.grad_accum} under DeepSpeed: fairdistill accumulates only under DDP and "
                "FSDP; set train.grad_accum=1 and raise train.micro_batch_size (or the process count), or use FSDP"
            )
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            cfg.train.micro_batch_size
        )
    device = accelerator.device
    main = accelerator.is_main_process
    set_seed(cfg.run.seed, device_specific=True)  # seed + rank: each process draws its own dropout masks
    t_setup = time.perf_counter()
    if main:
        log.info("precision: %s (%s)", "bf16 autocast" if mp == "bf16" else mp, mp_reason)
        log.info("resolved config (%s):\n%s", cfg.source or "defaults", config_to_yaml(cfg))
        _check_writable(run_dir)
        save_config(cfg, run_dir / "config.yaml")

    # Cheap checks first (the same as `distill check`), so a bad data file, word list, probe file or layer index
    # fails before any model loads.
    from distill.preflight import preflight

    preflight(cfg)
    # A corpus (local files or a hub dataset) is tokenized before the teacher's weights load, so text too short
    # for two blocks or a dataset that cannot be read fails first; teacher samples need the teacher itself.
    blocks, t_early = None, 0.0
    if cfg.data.source != "teacher_samples":
        from distill.models import load_tokenizer, resolve_teacher_path

        t0 = time.perf_counter()
        path = resolve_teacher_path(cfg.teacher, cfg.data.cache_dir)
        data_tokenizer = load_tokenizer(path, cfg.teacher.revision, cfg.teacher.trust_remote_code)
        with accelerator.main_process_first():
            blocks = build_blocks(cfg, data_tokenizer)
        t_early = time.perf_counter() - t0

    teacher, tokenizer, teacher_path = load_teacher(cfg)
    teacher.to(device)
    if cfg.student.init == "pretrained" and cfg.student.path and Path(cfg.student.path).is_dir():
        check_tokenizers(tokenizer, cfg.student.path)
    pruning = cfg.student.init == "teacher_layers" and cfg.student.prune.drop > 0
    student = n_params = None
    if pruning:  # the layers are ranked on the transfer blocks, built below
        check_prune(cfg.student, teacher)
    else:
        student = build_student(cfg.student, teacher, seed=cfg.run.seed)
        n_params = sum(p.numel() for p in student.parameters())
        if main:
            _check_writable(run_dir, _peak_disk(cfg, n_params))
    cf = (
        Counterfactuals(cfg, tokenizer, accelerator.process_index, accelerator.num_processes)
        if (cfg.augment.mode != "off" or cfg.perturb.kind != "none")
        else None
    )
    t_load = time.perf_counter() - t_setup - t_early

    t0 = time.perf_counter()
    if blocks is None:
        # the teacher samples the transfer set in the run's precision
        with accelerator.main_process_first(), accelerator.autocast():
            blocks = build_blocks(cfg, tokenizer, teacher=teacher, device=device)
    train_blocks, val_blocks = blocks
    t_data = time.perf_counter() - t0 + t_early
    if main:  # the held-out blocks travel with the run, so evaluation measures perplexity on exactly them
        from safetensors.torch import save_file

        save_file({"val": val_blocks.contiguous()}, str(run_dir / "val_blocks.safetensors"))
    if pruning:
        t0 = time.perf_counter()
        with accelerator.main_process_first():  # the others read the main process's cached scores: one choice
            pruned = prune_layers(cfg.student, teacher, train_blocks, cfg.data.cache_dir)
        student = build_student(cfg.student, teacher, seed=cfg.run.seed, layers=pruned["layers"])
        n_params = sum(p.numel() for p in student.parameters())
        if main:
            log.info(
                "student.prune: dropped teacher layers %s (lowest %s over %d x %d tokens%s); kept %s; scores %s",
                pruned["dropped"],
                pruned["by"],
                *pruned["blocks"],
                ", cached" if pruned["cached"] else "",
                pruned["layers"],
                " ".join(f"{i}:{v:.4f}" for i, v in enumerate(pruned["scores"])),
            )
            (run_dir / "prune.json").write_text(json.dumps(pruned, indent=1))
            _check_writable(run_dir, _peak_disk(cfg, n_params))
        t_data += time.perf_counter() - t0
    if cf is not None:
        t0 = time.perf_counter()
        with accelerator.main_process_first():
            her_decide.prepare(cf, cfg, teacher, train_blocks, accelerator.autocast)  # augment.her_decider
            cf.precompute(cfg, train_blocks)
        t_data += time.perf_counter() - t0
    tcache = t_head = None
    if cfg.teacher.cache and (cfg.kd.alpha > 0 or cf is not None):
        # before the teacher is sharded: the main process runs it whole over the blocks once
        from distill.teacher_cache import open_or_build

        t0 = time.perf_counter()
        tcache = open_or_build(cfg, teacher, tokenizer, train_blocks, device, accelerator)
        if tcache.format == "hidden":
            from distill.teacher_cache import teacher_head

            # in the dtype the cache holds (bf16 under bf16 autocast): the one the live lm_head multiplied in
            t_head = tuple(
                t.to(device, tcache.dtype) if t is not None else None for t in teacher_head(teacher)
            )
        t_data += time.perf_counter() - t0

    mbs, accum = cfg.train.micro_batch_size, cfg.train.grad_accum
    world = accelerator.num_processes
    tokens_per_step = mbs * accum * world * train_blocks.shape[1]
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.max_tokens / tokens_per_step))

    opt = torch.optim.AdamW(
        student.parameters(),
        lr=cfg.train.lr,
        betas=tuple(cfg.train.betas),
        weight_decay=cfg.train.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total_steps, cfg.train.warmup_frac, cfg.train.min_lr_frac)
    )
    student, opt, sched = accelerator.prepare(student, opt, sched)
    accelerator.register_save_state_pre_hook(drop_tied_weights)
    teacher = shard_teacher(accelerator, teacher)
    batches = MicroBatches(train_blocks.shape[0], mbs, accelerator.process_index, world, cfg.run.seed)
    fused, head = fused_head(cfg, accelerator, student)
    if main:
        log.info("loss: %s", "fused with the output projection" if fused else "chunked over full logits")

    step = 0
    state = {"skipped_nan": 0, "tokens": 0, "wandb_id": None, "world": world}
    if resume_ckpt is not None:
        ckpt = resume_ckpt
        accelerator.load_state(str(ckpt))
        st = json.loads((ckpt / "trainer_state.json").read_text())
        step = st["step"]
        batches.load_state_dict(st["batches"])
        state.update(st["state"])
        # the data position counts global micro-batches of micro_batch_size x world rows
        if state["world"] != world:
            raise FairDistillError(
                f"{ckpt} was written by {state['world']} processes and this run has {world}: the data position and "
                f"each process's RNG state belong to that count; resume with {state['world']} processes"
            )
        rng = torch.load(ckpt / f"loop_rng_{accelerator.process_index}.pt", weights_only=True)
        if cf is not None and rng.get("augment") is not None:
            cf.generator.set_state(rng["augment"])
        if main:
            log.info("resuming %s from %s (step %d)", run_dir, ckpt.name, step)
        if step >= total_steps and (run_dir / "final" / "config.json").is_file():
            if main:
                log.info("%s is finished (step %d of %d); nothing to train", run_dir, step, total_steps)
            accelerator.end_training()
            return run_dir
    # one W&B run per run directory, whatever the launches and resumes (an older run's id is kept)
    if main and use_wandb:
        state["wandb_id"] = wandb_run_id(run_dir, adopt=state["wandb_id"])
    if use_wandb:
        os.environ.setdefault("WANDB_MODE", wandb_mode(cfg.tracking.mode))
        accelerator.init_trackers(
            cfg.tracking.project,
            config=redact(cfg.to_dict()),
            init_kwargs={
                "wandb": wandb_init_kwargs(run_dir, cfg.run.name, cfg.tracking.tags, state["wandb_id"])
            },
        )
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step) if main else None

    def record(values: dict, at: int) -> None:
        if main:
            metrics.write(at, values)
        accelerator.log(values, step=at)

    if main:
        log.info(
            "teacher %s: %d layers; student %s: %d layers, %.1fM parameters; %d train / %d val blocks of %d tokens; "
            "%d steps x %d tokens (%d processes)",
            cfg.teacher.name_or_path,
            teacher.config.num_hidden_layers,
            cfg.student.init,
            accelerator.unwrap_model(student).config.num_hidden_layers,
            n_params / 1e6,
            train_blocks.shape[0],
            val_blocks.shape[0],
            train_blocks.shape[1],
            total_steps,
            tokens_per_step,
            world,
        )

    def evaluate(at: int, probe: bool) -> dict:
        out = {"val/loss": validation_loss(student, val_blocks, mbs, device, accelerator)}
        out["val/ppl"] = math.exp(min(out["val/loss"], 50))
        if probe:  # on every process: under FSDP or ZeRO-3 a forward gathers the weights from all of them
            fsdp = accelerator.distributed_type == DistributedType.FSDP
            probed = student if fsdp else accelerator.unwrap_model(student)
            pr = run_probe(probed, tokenizer, cfg, device)
            out["probe/pronoun_gap"], out["probe/he_minus_she"] = pr["pronoun_gap"], pr["he_minus_she"]
            out.update(run_stereo_probe(probed, tokenizer, cfg, device, teacher_stereo)[0])
        return out

    # the teacher's per-occupation scores, so the student's probe can say how much of its stereotype is kept
    stereo_teacher, teacher_stereo = run_stereo_probe(teacher, tokenizer, cfg, device)
    teacher_stereo = teacher_stereo or None

    if resume_step is None:
        t_eval = time.perf_counter()
        first = evaluate(0, probe=True)
        first["val/teacher_loss"] = validation_loss(teacher, val_blocks, mbs, device, accelerator)
        pr = run_probe(teacher, tokenizer, cfg, device)  # every process, as above
        first["probe/teacher_pronoun_gap"], first["probe/teacher_he_minus_she"] = (
            pr["pronoun_gap"],
            pr["he_minus_she"],
        )
        first.update({k.replace("probe/", "probe/teacher_"): v for k, v in stereo_teacher.items()})
        first.update(
            {"time/load_s": t_load, "time/data_s": t_data, "time/eval_s": time.perf_counter() - t_eval}
        )
        record(first, 0)
        if main:
            log.info("step 0 | " + " | ".join(f"{k} {v:.4g}" for k, v in first.items()))

    # ---- loop ----------------------------------------------------------------------------------------------------
    student.train()
    it = iter(batches)
    bar = tqdm(total=total_steps, initial=step, desc="distill", disable=not main, dynamic_ncols=True)
    window = {
        "loss": 0.0,
        "loss_kd": 0.0,
        "loss_ce": 0.0,
        "tokens": 0,
        "time": 0.0,
        "data": 0.0,
        "changed": 0.0,
        "n": 0,
    }
    stop_reason = None
    signals = StopSignals().__enter__()

    def checkpoint() -> Path:
        extra = {
            "rng": {"augment": cf.generator.get_state() if cf is not None else None},
            "state": {"step": step, "batches": batches.state_dict(), "state": state},
        }
        try:
            return save_checkpoint(accelerator, run_dir, step, extra, cfg.train.keep_last)
        except FairDistillError:  # a full disk: the message is the last thing printed, after the bar
            bar.close()
            signals.__exit__()
            accelerator.end_training()
            raise

    while step < total_steps:
        t_step = time.perf_counter()
        items = []
        t_wait = time.perf_counter()
        for _ in range(accum):
            idx = next(it)
            items.append(build_step_inputs(train_blocks[idx], cf, idx))
            items[-1]["blocks"] = idx
        t_wait = time.perf_counter() - t_wait
        local_tokens = sum(int((i["labels"] != -100).sum()) for i in items)
        global_tokens = accelerator.reduce(
            torch.tensor(local_tokens, device=device, dtype=torch.float64), reduction="sum"
        )
        # DDP averages gradients over processes, so scale by world to get the mean over the global tokens.
        normaliser = float(global_tokens) / world
        kd_sum = ce_sum = 0.0
        for k, item in enumerate(items):
            twin_rows = item.get("twin_rows")
            tin, tmask = item["x"], item["x_mask"]
            if twin_rows is not None and twin_rows.any():
                tin = torch.cat([tin, item["twin_ids"][twin_rows]])
                tmask = torch.cat([tmask, item["twin_mask"][twin_rows]])
            raw_logits = None
            if tcache is not None:
                twin_blocks = (
                    [b for b, t in zip(item["blocks"], twin_rows.tolist()) if t]
                    if twin_rows is not None
                    else []
                )
                if (
                    cf is None and fused and t_head is not None
                ):  # hidden states into the fused loss as they are
                    raw_logits, targets = tcache.hidden(item["blocks"], []).to(device), None
                else:
                    with torch.no_grad():
                        logp = tcache.log_probs(item["blocks"], twin_blocks, t_head).to(device)
                    targets = targets_from_log_probs(item, logp, cf)
                    del logp
            elif cfg.kd.alpha > 0 or cf is not None:
                with torch.no_grad(), accelerator.autocast():
                    t_logits = teacher(input_ids=tin.to(device), attention_mask=tmask.to(device)).logits
                if cf is None and fused:  # plain KD: the fused loss forms q chunk by chunk from the logits
                    raw_logits, targets = t_logits, None
                else:
                    targets = targets_for_step(item, t_logits, cfg, cf)
                del t_logits
            else:
                targets = (
                    None  # kd.alpha 0 and no counterfactuals: plain cross-entropy, the teacher is not needed
                )
            ctx = accelerator.no_sync(student) if k < accum - 1 else _nullcontext()
            with ctx:
                sums = student_loss_sums(
                    student,
                    head if fused else None,
                    item,
                    targets,
                    raw_logits,
                    cfg,
                    device,
                    accelerator,
                    teacher_head=t_head if (tcache is not None and raw_logits is not None) else None,
                )
                loss = combine(sums, cfg.kd.alpha, normaliser)
                accelerator.backward(loss)
            kd_sum += sums.kd.detach().item()
            ce_sum += sums.ce.detach().item()
        # Sums over all processes: the logged losses are means over the global batch, and every process takes the
        # same non-finite decision below (one process skipping or stopping alone would hang the others).
        changed = float(np.mean([i["changed_frac"] for i in items]))
        reduced = accelerator.reduce(
            torch.tensor([kd_sum, ce_sum, changed], device=device, dtype=torch.float64), reduction="sum"
        )
        kd_sum, ce_sum, changed = float(reduced[0]), float(reduced[1]), float(reduced[2]) / world
        step_loss = (cfg.kd.alpha * kd_sum + (1 - cfg.kd.alpha) * ce_sum) / max(1, int(global_tokens))
        grad_norm = None
        if not math.isfinite(step_loss):
            opt.zero_grad(set_to_none=True)
            if cfg.train.on_nan != "skip":
                stop_reason = f"non-finite loss at step {step + 1}"
                break
            state["skipped_nan"] += 1
            step += 1
            sched.step()
            bar.update(1)
            log.warning("step %d: non-finite loss, step skipped (%d so far)", step, state["skipped_nan"])
        else:
            if cfg.train.clip > 0:
                grad_norm = accelerator.clip_grad_norm_(student.parameters(), cfg.train.clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            state["tokens"] += int(global_tokens)
            dt = time.perf_counter() - t_step
            window["loss"] += step_loss
            window["loss_kd"] += kd_sum / max(1, int(global_tokens))
            window["loss_ce"] += ce_sum / max(1, int(global_tokens))
            window["tokens"] += int(global_tokens)
            window["time"] += dt
            window["data"] += t_wait
            window["changed"] += changed
            window["n"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")

        values: dict = {}
        if cfg.train.log_every and (step % cfg.train.log_every == 0 or step == total_steps) and window["n"]:
            n = window["n"]
            values.update(
                {
                    "train/loss": window["loss"] / n,
                    "train/loss_kd": window["loss_kd"] / n,
                    "train/loss_ce": window["loss_ce"] / n,
                    "train/lr": sched.get_last_lr()[0],
                    "train/tokens_per_s": window["tokens"] / window["time"],
                    "train/step_time_s": window["time"] / n,
                    # the share of the step spent waiting for its inputs (block rows, twins, CDA draws)
                    "train/data_wait_frac": window["data"] / window["time"],
                    "train/tokens": state["tokens"],
                    "train/epoch": batches.epoch,
                }
            )
            if grad_norm is not None:
                values["train/grad_norm"] = float(grad_norm)
            if cf is not None:
                values["train/changed_frac"] = window["changed"] / n
            window = dict.fromkeys(window, 0.0)
            window["n"] = 0
        do_eval = (cfg.train.eval_every and step % cfg.train.eval_every == 0) or step == total_steps
        do_probe = (cfg.train.probe_every and step % cfg.train.probe_every == 0) or step == total_steps
        if do_eval or do_probe:
            values.update(evaluate(step, probe=do_probe))
        if values:
            record(values, step)
            if main:
                bar.write(
                    f"step {step} | "
                    + " | ".join(
                        f"{k.split('/', 1)[1]} {v:.4g}" for k, v in values.items() if isinstance(v, float)
                    )
                )
        if (cfg.train.save_every and step % cfg.train.save_every == 0) or step == total_steps:
            saved = checkpoint()
            if stop_after is not None and step >= stop_after and step < total_steps:
                bar.close()
                signals.__exit__()
                accelerator.end_training()
                return run_dir
        else:
            saved = None
        # Every process must agree to stop at the same step (the signal may reach them at different times).
        flag = torch.tensor(float(signals.received is not None), device=device)
        if world > 1:
            flag = accelerator.reduce(flag, reduction="sum")
        if float(flag) > 0 and step < total_steps:
            if saved is None:
                saved = checkpoint()
            bar.close()
            signals.__exit__()
            accelerator.end_training()
            signum = signals.received or signal.SIGTERM
            raise TrainingStopped(
                f"stopped by {signal.Signals(signum).name} at step {step}/{total_steps}; checkpoint {saved} saved. "
                f"Resume with the same command: {cfg.command()}",
                128 + int(signum),
            )
    signals.__exit__()
    bar.close()
    if stop_reason:
        good = list_checkpoints(run_dir)
        hint = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was written yet"
        accelerator.end_training()
        raise FairDistillError(
            f"{stop_reason}; {hint}. Lower train.lr, raise train.clip, or set train.on_nan=skip"
        )

    # ---- final ---------------------------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    final_dir = run_dir / "final"
    write_probe_table(run_dir, cfg, teacher, student, tokenizer, accelerator, device)
    # On every process: under FSDP or ZeRO-3 this gathers the full weights from the shards (onto main).
    state_dict = accelerator.get_state_dict(student)
    if main:
        model = accelerator.unwrap_model(student)
        tmp = run_dir / ".tmp_final"
        shutil.rmtree(tmp, ignore_errors=True)
        # a name copied from the teacher's GGUF metadata, not this model's
        model.config.__dict__.pop("_model_name_or_path", None)
        try:
            model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            from distill.card import write_card

            write_card(tmp, cfg, run_dir, model=model, precision=mp)
        except Exception as e:
            if not _disk_full(e):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            accelerator.end_training()
            raise _disk_full_error(run_dir, "final/") from None
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp, final_dir)
        log.info("final student written to %s", final_dir)
    finish_trackers(accelerator, keep_wandb=keep_tracking)
    return run_dir


def write_probe_table(run_dir: Path, cfg: Config, teacher, student, tokenizer, accelerator, device) -> None:
    """Per-profession pronoun probe (he minus she, nats) of teacher and final student: `probe.json` and a W&B table."""
    from accelerate.utils import DistributedType

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    t = run_probe(teacher, tokenizer, cfg, device)  # every process: sharded models gather in forward
    s = run_probe(student if fsdp else accelerator.unwrap_model(student), tokenizer, cfg, device)
    if not accelerator.is_main_process:
        return
    rows = [
        {"profession": p, "teacher": t["per_profession"].get(p), "student": s["per_profession"][p]}
        for p in s["per_profession"]
    ]
    summary = {
        "teacher": {"pronoun_gap": t["pronoun_gap"], "he_minus_she": t["he_minus_she"]},
        "student": {"pronoun_gap": s["pronoun_gap"], "he_minus_she": s["he_minus_she"]},
        "per_profession": rows,
        "male_tokens": s.get("male_tokens"),
        "female_tokens": s.get("female_tokens"),
    }
    (run_dir / "probe.json").write_text(json.dumps(summary, indent=2))
    if any(tr.name == "wandb" for tr in accelerator.trackers):
        import wandb

        table = wandb.Table(columns=["profession", "teacher_he_minus_she", "student_he_minus_she"])
        for r in rows:
            table.add_data(r["profession"], r["teacher"], r["student"])
        accelerator.get_tracker("wandb", unwrap=True).log({"probe/per_profession": table})


class TrainingStopped(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was saved. `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """Record SIGTERM/SIGINT (cluster preemption, Ctrl-C) instead of dying mid-step; the loop checks `received`."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame):
        self.received = signum

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

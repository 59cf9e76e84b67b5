"""Everything the training loop needs, built in order: `prepare(cfg, stack) -> Run`.

Accelerator -> run folder (its lock and recipe identity, then resume or start) -> cheap checks -> transfer
blocks -> teacher, student (pruned: ranked on the blocks) -> twin table -> teacher targets (live or cached) ->
optimizer and schedule -> resume state -> trackers -> step 0's measurements. Cheap checks come first, so a bad recipe fails before any model loads.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distill.core.config import Config
from distill.core.errors import FairDistillError
from distill.core.files import atomic_save_tensors, atomic_write, tokenizer_fingerprint
from distill.core.ownership import RunLock
from distill.core.recipe import config_to_yaml, save_config
from distill.core.rundir import TOKENIZER_KEY, RunDir, peak_disk_bytes
from distill.core.tracking import MetricsLog
from distill.counterfactual import her_decide
from distill.counterfactual.twins import Counterfactuals
from distill.data.transfer import MicroBatches, build_blocks
from distill.teacher.targets import CachedTeacher, LiveTeacher, NoTeacher, open_cache, shard_teacher
from distill.training.lifecycle import Tracking, claim_run_folder, make_accelerator, start_trackers
from distill.training.monitor import Monitor
from distill.training.step import fused_head

log = logging.getLogger("distill")


@dataclass
class Run:
    """One training run, set up: what the loop reads and advances (`step`, `state`)."""

    cfg: Config
    run: RunDir
    accelerator: object
    tracking: Tracking
    mixed_precision: str
    teacher: object = None
    tokenizer: object = None
    student: object = None
    cf: Counterfactuals | None = None
    train_blocks: torch.Tensor | None = None
    val_blocks: torch.Tensor | None = None
    teacher_targets: object = None
    head: object = None
    sides: object = None
    """With `kd.log_ratio`: the gendered side pairs the log-ratio term reads (`training.log_ratio`)."""
    opt: object = None
    sched: object = None
    batches: MicroBatches | None = None
    total_steps: int = 0
    tokens_per_step: int = 0
    step: int = 0
    state: dict = field(default_factory=dict)
    resume_step: int | None = None
    saved_at: int | None = None
    """The step of the newest checkpoint this run saved or resumed from."""
    metrics: MetricsLog | None = None
    monitor: Monitor | None = None
    timings: dict = field(default_factory=dict)
    n_params: int = 0
    finished: bool = False
    """Resumed after its last step with final/ written: nothing to train."""

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def record(self, values: dict, at: int) -> None:
        if self.main:
            self.metrics.write(at, values)
        self.accelerator.log(values, step=at)


def lr_lambda(step: int, total: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Linear warmup over `warmup_frac` of the steps, then cosine decay to `min_lr_frac` of the peak."""
    warmup = int(round(total * warmup_frac))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))


def _peak_disk(cfg: Config, n_params: int) -> dict:
    """`peak_disk_bytes` for this run; a token budget's step count is known only after the data: assume the most."""
    return peak_disk_bytes(n_params, cfg.train.keep_last, cfg.train.max_steps, cfg.train.save_every)


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def prepare(cfg: Config, stack: ExitStack) -> Run:
    """Set up the run of `cfg`; the Accelerator, its trackers and process group are closed by `stack`."""
    from accelerate.utils import set_seed

    from distill.core.cpu_heap import configure_cpu_heap, heap_log_line
    from distill.core.precision import emulated_bf16_warning, resolve_mixed_precision
    from distill.models.remote_code import allow_remote_code
    from distill.training.preflight import early_checks, preflight

    heap_line = heap_log_line(
        *configure_cpu_heap()
    )  # before any large tensor, the transfer set's sampling included
    early_checks(cfg)
    allow_remote_code(cfg)  # refused unconfirmed, or warned, before any of the teacher's code could run
    run = RunDir.for_config(cfg)
    lock = RunLock(run)
    stack.callback(
        lock.release
    )  # first in, so released last: after the trackers have written their last file
    mp, mp_reason = resolve_mixed_precision(cfg.train.mixed_precision)
    accelerator, tracking = make_accelerator(cfg, run, mp, stack)
    claim_run_folder(cfg, run, lock, accelerator)  # before anything is written to the folder
    resume_ckpt = run.open(cfg)
    r = Run(cfg, run, accelerator, tracking, mp)
    set_seed(cfg.run.seed, device_specific=True)  # seed + rank: each process draws its own dropout masks
    t_setup = time.perf_counter()
    if r.main:
        log.info("precision: %s (%s)", "bf16 autocast" if mp == "bf16" else mp, mp_reason)
        if (warning := emulated_bf16_warning(mp, cpu=accelerator.device.type == "cpu")) is not None:
            log.warning("%s", warning)
        log.info("%s", heap_line)
        log.info("resolved config (%s):\n%s", cfg.source or "defaults", config_to_yaml(cfg))
        run.check_writable()
        save_config(cfg, run.config)
    # Cheap checks first (the same as `distill check`), so a bad data file, word list, probe file or layer index
    # fails before any model loads.
    preflight(cfg)
    _load(r, t_setup)
    _targets_and_optimizer(r)
    if resume_ckpt is not None:
        _resume(r, resume_ckpt)
        if r.finished:
            return r
    start_trackers(cfg, run, accelerator, r.state)
    r.metrics = MetricsLog(run.metrics, resume_step=r.resume_step) if r.main else None
    _log_summary(r)
    r.monitor = Monitor(cfg, accelerator, r.student, r.teacher, r.tokenizer, r.val_blocks)
    if r.resume_step is None:
        first = r.monitor.first({"time/load_s": r.timings["load"], "time/data_s": r.timings["data"]})
        r.record(first, 0)
        if r.main:
            log.info("step 0 | " + " | ".join(f"{k} {v:.4g}" for k, v in first.items()))
    return r


def _load(r: Run, t_setup: float) -> None:
    """Transfer blocks, teacher, student and twins; `r.timings` gets the load and data seconds."""
    from distill.models.attention import check_attention
    from distill.models.loading import build_student, check_positions, check_tokenizers, load_teacher
    from distill.models.pruning import check_prune

    cfg, accelerator = r.cfg, r.accelerator
    device = accelerator.device
    # A corpus (local files or a hub dataset) is tokenized before the teacher's weights load, so text too short
    # for two blocks or a dataset that cannot be read fails first; teacher samples need the teacher itself.
    blocks, t_early = None, 0.0
    if cfg.data.source != "teacher_samples":
        from distill.models.loading import load_tokenizer, resolve_teacher_path

        t0 = time.perf_counter()
        path = resolve_teacher_path(cfg.teacher, cfg.data.cache_dir)
        data_tokenizer = load_tokenizer(path, cfg.teacher.revision, cfg.teacher.trust_remote_code)
        with accelerator.main_process_first():
            blocks = build_blocks(cfg, data_tokenizer)
        t_early = time.perf_counter() - t0

    r.teacher, r.tokenizer, _ = load_teacher(cfg)
    check_positions(r.teacher, cfg, f"teacher {cfg.teacher.name_or_path!r}")
    r.teacher.to(device)
    if cfg.student.init == "pretrained" and cfg.student.path and Path(cfg.student.path).is_dir():
        check_tokenizers(r.tokenizer, cfg.student.path)
    pruning = cfg.student.init == "teacher_layers" and cfg.student.prune.drop > 0
    if pruning:  # the layers are ranked on the transfer blocks, built below
        check_prune(cfg.student, r.teacher)
        check_attention(r.teacher, cfg.train.attention)  # the student will be the teacher's architecture
    else:
        r.student = build_student(cfg.student, r.teacher, seed=cfg.run.seed)
        check_positions(r.student, cfg, "the student")
        check_attention(r.student, cfg.train.attention)
        r.n_params = _n_params(r.student)
        if r.main:
            r.run.check_writable(_peak_disk(cfg, r.n_params))
    if cfg.augment.mode != "off" or cfg.perturb.kind != "none":
        r.cf = Counterfactuals(cfg, r.tokenizer, accelerator.process_index, accelerator.num_processes)
    r.timings["load"] = time.perf_counter() - t_setup - t_early

    t0 = time.perf_counter()
    if blocks is None:
        # the teacher samples the transfer set in the run's precision
        with accelerator.main_process_first(), accelerator.autocast():
            blocks = build_blocks(cfg, r.tokenizer, teacher=r.teacher, device=device)
    r.train_blocks, r.val_blocks = blocks
    if r.main:  # the held-out blocks travel with the run, so evaluation measures perplexity on exactly them,
        # with the fingerprint of the tokenizer that made them, which evaluation checks its tokenizers against
        meta = {TOKENIZER_KEY: tokenizer_fingerprint(r.tokenizer)}
        atomic_save_tensors({"val": r.val_blocks}, r.run.val_blocks, metadata=meta)
    if pruning:
        _prune(r)
    if r.cf is not None:
        with accelerator.main_process_first():
            # augment.her_decider: teacher decides her -> his/him where the rule is unsure
            her_decide.prepare(r.cf, cfg, r.teacher, r.train_blocks, accelerator.autocast)
            r.cf.precompute(cfg, r.train_blocks)
    r.timings["data"] = time.perf_counter() - t0 + t_early


def _prune(r: Run) -> None:
    """Rank the teacher's layers on the transfer blocks and build the student from the kept ones."""
    from distill.models.loading import build_student
    from distill.models.pruning import prune_layers

    cfg = r.cfg
    with r.accelerator.main_process_first():  # the others read the main process's cached scores: one choice
        pruned = prune_layers(cfg.student, r.teacher, r.train_blocks, cfg.data.cache_dir)
    r.student = build_student(cfg.student, r.teacher, seed=cfg.run.seed, layers=pruned["layers"])
    r.n_params = _n_params(r.student)
    if r.main:
        log.info(
            "student.prune: dropped teacher layers %s (lowest %s over %d x %d tokens%s); kept %s; scores %s",
            pruned["dropped"],
            pruned["by"],
            *pruned["blocks"],
            ", cached" if pruned["cached"] else "",
            pruned["layers"],
            " ".join(f"{i}:{v:.4f}" for i, v in enumerate(pruned["scores"])),
        )
        atomic_write(r.run.prune, json.dumps(pruned, indent=1))
        r.run.check_writable(_peak_disk(cfg, r.n_params))


def _targets_and_optimizer(r: Run) -> None:
    """The teacher cache (before the teacher is sharded), the optimizer and schedule, the prepared student, the
    sharded teacher, the micro-batch order and the teacher-target source the loss reads."""
    cfg, accelerator = r.cfg, r.accelerator
    t0 = time.perf_counter()
    cache = None
    if cfg.teacher.cache and (cfg.kd.alpha > 0 or r.cf is not None):
        cache, t_head = open_cache(cfg, r.teacher, r.tokenizer, r.train_blocks, accelerator, r.cf)
    r.timings["data"] += time.perf_counter() - t0

    mbs, world = cfg.train.micro_batch_size, accelerator.num_processes
    r.tokens_per_step = mbs * cfg.train.grad_accum * world * r.train_blocks.shape[1]
    r.total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.max_tokens / r.tokens_per_step))
    opt = torch.optim.AdamW(
        r.student.parameters(),
        lr=cfg.train.lr,
        betas=tuple(cfg.train.betas),
        weight_decay=cfg.train.weight_decay,
    )
    total, warmup, min_lr = r.total_steps, cfg.train.warmup_frac, cfg.train.min_lr_frac
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total, warmup, min_lr))
    from distill.models.attention import set_attention
    from distill.models.loading import drop_tied_weights

    kernel = set_attention(r.student, cfg.train.attention)
    if r.main:
        log.info("student attention while training: %s (train.attention=%s)", kernel, cfg.train.attention)
    r.student, r.opt, r.sched = accelerator.prepare(r.student, opt, sched)

    accelerator.register_save_state_pre_hook(drop_tied_weights)
    r.teacher = shard_teacher(accelerator, r.teacher)
    r.batches = MicroBatches(r.train_blocks.shape[0], mbs, accelerator.process_index, world, cfg.run.seed)
    fused, r.head = fused_head(cfg, accelerator, r.student)
    if cfg.kd.log_ratio > 0:
        r.sides = _log_ratio_sides(cfg, r, accelerator.device)
    if r.main:
        log.info("loss: %s", "fused with the output projection" if fused else "chunked over full logits")
    tv = cfg.kd.changed_tv if cfg.kd.changed_weight != 1.0 else None
    if cache is not None:
        r.teacher_targets = CachedTeacher(
            cache, t_head, accelerator.device, r.cf, raw_ok=fused, changed_tv=tv
        )
    elif cfg.kd.alpha > 0 or r.cf is not None:
        r.teacher_targets = LiveTeacher(
            r.teacher, accelerator, cfg.kd.temperature, r.cf, raw_ok=fused, changed_tv=tv
        )
    else:  # kd.alpha 0 and no counterfactuals: plain cross-entropy, the teacher is not needed
        r.teacher_targets = NoTeacher()
    r.state = {"skipped_nan": 0, "tokens": 0, "wandb_id": None, "world": world}


def _resume(r: Run, ckpt: Path) -> None:
    """Continue from `ckpt`: weights, optimizer, schedule, data position, augment draws, counters."""
    accelerator, world = r.accelerator, r.accelerator.num_processes
    st, rng = r.run.load_checkpoint(accelerator, ckpt)
    r.step = r.resume_step = r.saved_at = st["step"]
    r.batches.load_state_dict(st["batches"])
    r.state.update(st["state"])
    # the data position counts global micro-batches of micro_batch_size x world rows
    if r.state["world"] != world:
        raise FairDistillError(
            f"{ckpt} was written by {r.state['world']} processes and this run has {world}: the data position and "
            f"each process's RNG state belong to that count; resume with {r.state['world']} processes"
        )
    if r.cf is not None and rng.get("augment") is not None:
        r.cf.generator.set_state(rng["augment"])
    if r.main:
        log.info("resuming %s from %s (step %d)", r.run.path, ckpt.name, r.step)
    if r.step >= r.total_steps and r.run.finished():
        if r.main:
            log.info("%s is finished (step %d of %d); nothing to train", r.run.path, r.step, r.total_steps)
        r.finished = True


def _log_summary(r: Run) -> None:
    if not r.main:
        return
    cfg = r.cfg
    log.info(
        "teacher %s: %d layers; student %s: %d layers, %.1fM parameters; %d train / %d val blocks of %d tokens; "
        "%d steps x %d tokens (%d processes)",
        cfg.teacher.name_or_path,
        r.teacher.config.num_hidden_layers,
        cfg.student.init,
        r.accelerator.unwrap_model(r.student).config.num_hidden_layers,
        r.n_params / 1e6,
        r.train_blocks.shape[0],
        r.val_blocks.shape[0],
        r.train_blocks.shape[1],
        r.total_steps,
        r.tokens_per_step,
        r.accelerator.num_processes,
    )


def _log_ratio_sides(cfg: Config, r: Run, device):
    """The side pairs of `kd.log_ratio`: the run's exchange when it has counterfactuals, else one built from the
    same word lists (pairs, names when `augment.names` is set, her/his groups)."""
    from distill.counterfactual.exchange import g_word_groups, g_word_pairs, gendered_exchange
    from distill.counterfactual.wordlists import load_lexicon
    from distill.training.log_ratio import gendered_sides

    if r.cf is not None:
        ex = r.cf.exchange(torch.device("cpu"))
    else:
        a = cfg.augment
        lex = load_lexicon(a.pairs, a.one_to_many, a.names)
        ex, _ = gendered_exchange(r.tokenizer, g_word_pairs(lex, use_names=bool(a.names)), g_word_groups(lex))
    sides = gendered_sides(ex)
    if r.main:
        log.info(
            "log-ratio term: weight %g, %d side pairs over %d columns of G, m0 %g",
            cfg.kd.log_ratio,
            sides.female.shape[0],
            sides.cols.numel(),
            cfg.kd.log_ratio_mass,
        )
    return sides.to(device)

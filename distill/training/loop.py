"""`train(cfg)`: the whole distillation run, top to bottom.

prepare (run folder, models, data, twins, teacher targets, optimizer; `distill.training.prepare`) -> loop over optimizer
steps: fetch grad_accum micro-batches (`make_step_batch`) -> count the step's tokens (all processes) ->
per micro-batch: the teacher's targets (`teacher_targets.targets`: x and the twins x~ in one pass, perturbed) ->
student forward, KD + CE sums / step tokens -> backward -> clip, step, schedule -> every N steps: metrics line,
validation and probes (`distill.training.monitor`), checkpoint (`distill.core.rundir`) -> the probe table and `final/`.

The evaluation suite (`eval.suite`) runs afterwards, from the command line (`distill.cli`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from distill.core.config import Config
from distill.core.errors import FairDistillError
from distill.counterfactual.twins import make_step_batch
from distill.training.lifecycle import StoppedAtOnce, StopSignals, TrainingStopped
from distill.training.losses import combine
from distill.training.prepare import Run, prepare
from distill.training.step import student_loss_sums

log = logging.getLogger("distill")


def train(cfg: Config, stop_after: int | None = None, keep_tracking: bool = False) -> Path:
    """Run `cfg` to the end (or, with `stop_after`, leave after the first checkpoint at or past that step, as a
    preempted job would; tests use it). Returns the run directory. `keep_tracking`: leave the W&B run open for the
    evaluation that follows in this process (`tracking.log_evaluation` logs into it and finishes it)."""
    with ExitStack() as stack:  # closes the trackers and the process group however the run ends
        r = prepare(cfg, stack)
        with StopSignals() as signals:
            try:
                left = _steps(r, signals, stop_after)
                if not left:  # `stop_after` leaves as a preempted job would: no export
                    export(r)
            except StoppedAtOnce as e:
                last = r.run.latest()
                kept = (
                    f"the last whole checkpoint is {last.name}" if last else "no checkpoint was written yet"
                )
                raise StoppedAtOnce(
                    e.signum,
                    f"stopped at once by a second {signal.Signals(e.signum).name} at step {r.step}/{r.total_steps}; "
                    f"what was being written was removed and {kept}. Resume with the same command: {cfg.command()}",
                ) from None
            if signals.received is not None and not left:
                raise TrainingStopped(
                    f"stopped by {signal.Signals(signals.received).name} after the last step: final/ was written "
                    f"whole first and the run is complete ({r.step}/{r.total_steps} steps); what follows it (the "
                    "evaluation suite) did not run",
                    128 + int(signals.received),
                )
            r.tracking.keep_wandb = keep_tracking and not left
    return r.run.path


def _steps(r: Run, signals: StopSignals, stop_after: int | None) -> bool:
    """The optimizer steps from `r.step` to the end; True when there is nothing to export: `stop_after` left
    early, or the run was resumed after its last step with final/ written."""
    with _progress(r) as bar:
        r.student.train()
        window, batches, left = Window(), iter(r.batches), r.finished  # finished: resumed after its last step
        while not left and r.step < r.total_steps:
            t_step = time.perf_counter()
            result = optimizer_step(r, batches, signals)
            if result["interrupted"]:
                raise _stopped(r, signals.received or signal.SIGTERM, during=True)
            if result["stopped"]:
                raise _non_finite(r)
            window.add(result, time.perf_counter() - t_step)
            bar.update(1)
            if result["loss"] is not None:
                bar.set_postfix(loss=f"{result['loss']:.3f}")
            report(r, window, result.get("grad_norm"), bar)
            saved = checkpoint(r) if _every(r, r.cfg.train.save_every) else None
            left = saved is not None and stop_after is not None and stop_after <= r.step < r.total_steps
            signum = signals.agreed(r.accelerator)
            if signum is not None and r.step < r.total_steps and not left:
                raise _stopped(r, signum, during=False)
    if not left and r.step and r.state["skipped_nan"] >= r.step:
        raise FairDistillError(
            f"every one of the {r.step} steps had a non-finite loss and was skipped (train.on_nan=skip), so the "
            "student never trained: no final/ is written (the checkpoints are kept). The loss is not finite before "
            "any update, so the teacher's outputs or the data are the cause, not the learning rate; check the "
            "teacher (distill eval <teacher>)"
        )
    return bool(left)


def _non_finite(r: Run) -> FairDistillError:
    last = r.run.latest()
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    if r.step == 0:  # no update yet: the learning rate cannot be the cause
        fix = (
            "The loss was not finite before any update, so the teacher's outputs or the data are the cause, not "
            "the learning rate; check the teacher (distill eval <teacher>)"
        )
    else:
        fix = "Lower train.lr, raise train.clip, or set train.on_nan=skip"
    return FairDistillError(f"non-finite loss at step {r.step + 1}; {kept}. {fix}")


def _stopped(r: Run, signum: int, during: bool) -> TrainingStopped:
    """Save the state at the end of the last whole step (unless a checkpoint of it exists) and say so."""
    name = signal.Signals(signum).name
    where = (
        f"during step {r.step + 1}/{r.total_steps} (its micro-batches so far were dropped)"
        if during
        else f"at step {r.step}/{r.total_steps}"
    )
    if r.step == 0:
        what = "no step had ended, so nothing was saved; the same command starts it again"
        return TrainingStopped(f"stopped by {name} {where}; {what}: {r.cfg.command()}", 128 + int(signum))
    saved = r.run.checkpoint(r.step) if r.saved_at == r.step else checkpoint(r)
    return TrainingStopped(
        f"stopped by {name} {where}; checkpoint {saved} saved. Resume with the same command: {r.cfg.command()}",
        128 + int(signum),
    )


@contextlib.contextmanager
def _progress(r: Run):
    from tqdm.auto import tqdm

    show = r.main and not r.finished
    bar = tqdm(total=r.total_steps, initial=r.step, desc="distill", disable=not show, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def optimizer_step(r: Run, batches, stop: StopSignals | None = None) -> dict:
    """One optimizer step over `grad_accum` micro-batches. The losses are sums divided by the token count of the
    whole step on all processes, so splitting a batch changes nothing. A non-finite loss is skipped
    (`train.on_nan: skip`) or stops the run ("stopped"); every process takes the same decision. A signal recorded
    by `stop` is honoured between micro-batches: the step is dropped ("interrupted") and the data position and
    random states are put back as they were at its start, so a checkpoint saved then is the previous step's."""
    cfg, accelerator, accum = r.cfg, r.accelerator, r.cfg.train.grad_accum
    world, device = accelerator.num_processes, accelerator.device
    start = _position(r) if stop is not None else None
    t_wait = time.perf_counter()
    items = []
    for _ in range(accum):
        if stop is not None and stop.received is not None:
            break
        idx = next(batches)
        items.append(make_step_batch(r.train_blocks[idx], r.cf, idx))
    if stop is not None and stop.agreed(accelerator) is not None:
        return _drop_step(r, start)
    t_wait = time.perf_counter() - t_wait
    local_tokens = sum(b.tokens for b in items)
    global_tokens = accelerator.reduce(
        torch.tensor(local_tokens, device=device, dtype=torch.float64), reduction="sum"
    )
    # DDP averages gradients over processes, so scale by world to get the mean over the global tokens.
    normaliser = float(global_tokens) / world
    kd_sum = ce_sum = weighted = lr_sum = 0.0
    for k, batch in enumerate(items):
        if k and stop is not None and stop.agreed(accelerator) is not None:
            return _drop_step(r, start)
        targets = r.teacher_targets.targets(batch)
        if targets.changed is not None:  # kd.changed_weight: the loss positions it weighs
            weighted += float((targets.changed & (batch.labels != -100).to(targets.changed.device)).sum())
        with accelerator.no_sync(r.student) if k < accum - 1 else contextlib.nullcontext():
            sums = student_loss_sums(r.student, r.head, batch, targets, cfg, device, accelerator, r.sides)
            del targets
            accelerator.backward(combine(sums, cfg.kd.alpha, normaliser, cfg.kd.log_ratio))
        kd_sum += sums.kd.detach().item()
        ce_sum += sums.ce.detach().item()
        if sums.log_ratio is not None:
            lr_sum += sums.log_ratio.detach().item()
    # Sums over all processes: the logged losses are means over the global batch, and every process takes the
    # same non-finite decision below (one process skipping or stopping alone would hang the others).
    changed = float(np.mean([b.changed_frac for b in items]))
    reduced = accelerator.reduce(
        torch.tensor([kd_sum, ce_sum, changed, weighted, lr_sum], device=device, dtype=torch.float64),
        reduction="sum",
    )
    kd_sum, ce_sum, lr_sum = float(reduced[0]), float(reduced[1]), float(reduced[4])
    # the share of the step's loss positions (all micro-batches, all processes) whose KD term is weighed
    changed, weighted = float(reduced[2]) / world, float(reduced[3]) / max(1.0, float(global_tokens))
    n = max(1, int(global_tokens))
    step_loss = (cfg.kd.alpha * kd_sum + (1 - cfg.kd.alpha) * ce_sum + cfg.kd.log_ratio * lr_sum) / n
    out = {"stopped": False, "interrupted": False, "loss": None, "wait": t_wait}
    if not math.isfinite(step_loss):
        r.opt.zero_grad(set_to_none=True)
        if cfg.train.on_nan != "skip":
            return out | {"stopped": True}
        r.state["skipped_nan"] += 1
        r.step += 1
        r.sched.step()
        log.warning("step %d: non-finite loss, step skipped (%d so far)", r.step, r.state["skipped_nan"])
        return out
    if cfg.train.clip > 0:
        out["grad_norm"] = accelerator.clip_grad_norm_(r.student.parameters(), cfg.train.clip)
    r.opt.step()
    r.sched.step()
    r.opt.zero_grad(set_to_none=True)
    r.step += 1
    r.state["tokens"] += int(global_tokens)
    return out | {
        "loss": step_loss,
        "kd": kd_sum / n,
        "ce": ce_sum / n,
        "log_ratio": lr_sum / n,
        "tokens": int(global_tokens),
        "changed": changed,
        "weighted": weighted,
    }


def _position(r: Run) -> dict:
    """What a step advances before its optimizer update: the data position, the augment draws and the random
    states a checkpoint saves (Python, numpy, torch, CUDA)."""
    cuda = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    return {
        "batches": r.batches.state_dict(),
        "augment": r.cf.generator.get_state() if r.cf is not None else None,
        "rng": (random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda),
    }


def _drop_step(r: Run, start: dict) -> dict:
    """Undo a step left between micro-batches: its gradients, the data it drew and the random numbers it used."""
    r.opt.zero_grad(set_to_none=True)
    r.batches.load_state_dict(start["batches"])
    if start["augment"] is not None:
        r.cf.generator.set_state(start["augment"])
    py, npy, cpu, cuda = start["rng"]
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    return {"stopped": False, "interrupted": True, "loss": None}


class Window:
    """Sums of the steps since the last metrics line (skipped steps count for nothing)."""

    KEYS = ("loss", "kd", "ce", "log_ratio", "tokens", "time", "wait", "changed", "weighted")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.n = 0

    def add(self, result: dict, seconds: float) -> None:
        if result["loss"] is None:
            return
        for k in ("loss", "kd", "ce", "log_ratio", "tokens", "wait", "changed", "weighted"):
            self.sums[k] += result[k]
        self.sums["time"] += seconds
        self.n += 1

    def values(self, r: Run) -> dict:
        s, n = self.sums, self.n
        out = {
            "train/loss": s["loss"] / n,
            "train/loss_kd": s["kd"] / n,
            "train/loss_ce": s["ce"] / n,
            **({"train/loss_log_ratio": s["log_ratio"] / n} if r.sides is not None else {}),
            "train/lr": r.sched.get_last_lr()[0],
            "train/tokens_per_s": s["tokens"] / s["time"],
            "train/step_time_s": s["time"] / n,
            # the share of the step spent waiting for its inputs (block rows, twins, CDA draws)
            "train/data_wait_frac": s["wait"] / s["time"],
            "train/tokens": r.state["tokens"],
            "train/epoch": r.batches.epoch,
        }
        if r.cf is not None:
            out["train/changed_frac"] = s["changed"] / n
        if r.cfg.kd.changed_weight != 1.0:  # loss positions whose KD term counts kd.changed_weight times
            out["train/weighted_frac"] = s["weighted"] / n
        return out


def _every(r: Run, n: int) -> bool:
    """Step `r.step` is a multiple of `n` (0: never), or the last."""
    return bool(n and r.step % n == 0) or r.step == r.total_steps


def report(r: Run, window: Window, grad_norm, bar) -> None:
    """The metrics line every `log_every` steps, validation every `eval_every`, probes every `probe_every`."""
    cfg, values = r.cfg.train, {}
    if cfg.log_every and _every(r, cfg.log_every) and window.n:
        values.update(window.values(r))
        if grad_norm is not None:
            values["train/grad_norm"] = float(grad_norm)
        window.reset()
    do_eval, do_probe = _every(r, cfg.eval_every), _every(r, cfg.probe_every)
    if do_eval or do_probe:
        values.update(r.monitor.evaluate(r.step, probe=do_probe))
    if values:
        r.record(values, r.step)
        if r.main:
            shown = " | ".join(
                f"{k.split('/', 1)[1]} {v:.4g}" for k, v in values.items() if isinstance(v, float)
            )
            bar.write(f"step {r.step} | {shown}")


def checkpoint(r: Run) -> Path:
    """Save the run's state at `r.step` (weights, optimizer, schedule, data position, augment draws, counters)."""
    rng = {"augment": r.cf.generator.get_state() if r.cf is not None else None}
    state = {"step": r.step, "batches": r.batches.state_dict(), "state": r.state}
    saved = r.run.save_checkpoint(r.accelerator, r.step, state, rng, r.cfg.train.keep_last)
    r.saved_at = r.step
    return saved


def _erase(r: Run, model, state_dict):
    """`student.erase` on the main process before `final/` is written: on the model itself, or, where the engine
    shards it (FSDP, DeepSpeed), on a full copy built from the gathered weights. Writes `<run>/erase.json` (`erase.record`)."""
    from accelerate.utils import DistributedType

    from distill.training.erase import erase_student, record

    if r.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(model.config)
        model.load_state_dict(state_dict)
    report = erase_student(
        model, r.tokenizer, r.cfg, r.train_blocks, r.val_blocks, autocast=r.accelerator.autocast
    )
    record(r.run.path, report, r.step)
    return model, model.state_dict()


def export(r: Run) -> None:
    """The per-profession probe table, then `final/`: the student (save_pretrained), its tokenizer, its card."""
    accelerator = r.accelerator
    accelerator.wait_for_everyone()
    r.monitor.write_probe_table(r.run, r.step)
    # On every process: under FSDP or ZeRO-3 this gathers the full weights from the shards (onto main).
    state_dict = accelerator.get_state_dict(r.student)
    if not r.main:
        return
    from distill.models.remote_code import check_no_code, library_tokenizer
    from distill.reporting.card import write_card

    model = accelerator.unwrap_model(r.student)
    # a name copied from the teacher's GGUF metadata, not this model's
    model.config.__dict__.pop("_model_name_or_path", None)
    if r.cfg.student.erase.rank > 0:
        model, state_dict = _erase(r, model, state_dict)

    def write(folder: Path) -> None:
        model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        library_tokenizer(r.tokenizer).save_pretrained(folder)
        write_card(folder, r.cfg, r.run.path, model=model, precision=r.mixed_precision)
        check_no_code(folder)  # the teacher's code never travels with the student

    r.run.write_final(write)
    log.info("final student written to %s", r.run.final)

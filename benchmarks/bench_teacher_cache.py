"""Cached teacher targets (`teacher.cache`): what a training step costs with them, what they cost on disk, and how
far they are from the teacher's full distribution.

On the embedded SmolLM2-135M teacher and the default recipe's 6-layer student (`--quick`: tiny random models with
the same tokenizer), over blocks of the project's text:

- builds the cache for `--blocks` blocks and their twins with `distill.teacher.cache.build_cache` (timed once),
  in the `hidden` format (the default) and the `topk` format for each `--top-k`;
- bytes per cached token;
- KL(full targets || cached targets) per position, mean and max, for plain KD and for the method's perturbed
  targets (two-sided CDA + `mean`), each against the same targets built from the live teacher;
- step time, interleaved in one process, with the hidden-state cache: a cached step (read the micro-batch's rows,
  the teacher's logits from its output projection, targets, student forward, KD + CE loss, backward, as the
  trainer runs them) against a student-only cross-entropy step on the same student rows. Target: cached / CE
  <= 1.15. The live-teacher step and the top-k cache's step are timed alongside for reference.

    python benchmarks/bench_teacher_cache.py              # B x T = 4 x 128, top-k 64 and 256
    python benchmarks/bench_teacher_cache.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import ROOT, machine, pick_device, ratio_line, time_interleaved  # noqa: E402
from bench_counterfactual import load_models, make_batch, targets_for_step  # noqa: E402

from distill.core.precision import autocast, resolve_mixed_precision  # noqa: E402
from distill.core.recipe import load_config  # noqa: E402
from distill.counterfactual.twins import Counterfactuals, StepBatch, make_step_batch  # noqa: E402
from distill.data.transfer import next_token_labels  # noqa: E402
from distill.teacher.cache import TeacherCache, build_cache, teacher_head  # noqa: E402
from distill.teacher.targets import Targets, batch_targets  # noqa: E402
from distill.training.losses import combine  # noqa: E402
from distill.training.step import student_loss_sums  # noqa: E402

TARGET = 1.15


def student_rows(ids, mask) -> StepBatch:
    """A batch the student trains on as it is (no twins)."""
    return StepBatch(ids, mask, ids, mask, next_token_labels(ids, mask))


def kl_rows(full: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
    """KL(full || cached) per position, both log-probabilities [..., V]."""
    p = full.exp()
    return torch.where(p > 0, p * (full - cached), torch.zeros_like(p)).sum(-1)


class _Acc:
    """The accelerator's `autocast()` in the benchmark's precision (`--precision`, set in main)."""

    device, precision = "cpu", "no"

    @classmethod
    def autocast(cls):
        return autocast(cls.device, cls.precision)


def student_step(student, ids, mask, targets, cfg, device) -> None:
    """Student forward + KD/CE sums + backward as the trainer runs them (`student_loss_sums`: the fused loss when
    `kd.fused`, the default); targets None: CE alone."""
    student.zero_grad(set_to_none=True)
    head = student.get_output_embeddings() if cfg.kd.fused else None
    sums = student_loss_sums(student, head, student_rows(ids, mask), Targets(logq=targets), cfg, device, _Acc)
    alpha = cfg.kd.alpha if targets is not None else 0.0
    combine(sums, alpha, max(1, sums.tokens)).backward()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument(
        "--blocks", type=int, default=16, help="blocks in the cache (the step reads 'batch' of them)"
    )
    p.add_argument("--top-k", type=int, nargs="+", default=[64, 256])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--unfused", action="store_true", help="kd.fused=false: the loss on full student logits")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "no", "bf16"], help="as train.mixed_precision"
    )
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.blocks = min(a.reps, 3), min(a.blocks, 8)
    os.chdir(ROOT)
    device = pick_device(a.device)
    torch.manual_seed(0)
    _Acc.device = device
    _Acc.precision, why = resolve_mixed_precision(a.precision, cuda=device.type == "cuda")
    print(
        f"machine: {machine()}; device {device}; {'tiny random models' if a.quick else 'SmolLM2-135M -> 6L'}; "
        f"precision {_Acc.precision} ({why})"
    )
    cfg = load_config(
        ROOT / "recipes" / "smollm2-135m_to_6L.yaml",
        ["augment.mode=append", "perturb.kind=mean", "augment.her_decider=rule"],
    )
    teacher, student, tok = load_models(cfg, a.quick, device)
    cf = Counterfactuals(cfg, tok)
    blocks = make_batch(tok, cf, a.blocks, a.seq)
    g_idx = cf.builder.g_mask.nonzero(as_tuple=True)[0]
    batch = list(range(a.batch))
    item = make_step_batch(blocks[batch], cf)
    item_plain = make_step_batch(blocks[batch], None)
    item.blocks = batch
    twin_blocks = item.twin_blocks()
    tin, tmask = item.teacher_inputs()
    with torch.no_grad(), _Acc.autocast():
        logits = teacher(input_ids=tin.to(device), attention_mask=tmask.to(device)).logits
    full_method = targets_for_step(item, logits, cfg, cf)
    full_plain = targets_for_step(item_plain, logits[: a.batch], cfg, None)

    tmp = Path(tempfile.mkdtemp(prefix="fairdistill-bench-cache-"))
    cfg.data.cache_dir = str(tmp)
    table = cf.precompute(cfg, blocks)  # the twins the cache build reads
    caches: dict[str, TeacherCache] = {}
    head = teacher_head(teacher)
    for fmt, k in [("hidden", 0)] + [("topk", k) for k in a.top_k]:
        name = "hidden" if fmt == "hidden" else f"topk{k}"
        t0 = time.perf_counter()
        meta = build_cache(
            tmp / f"{name}.safetensors",
            teacher,
            blocks,
            table,
            g_idx,
            cfg.kd.temperature,
            k or 1,
            a.batch,
            device,
            _Acc.autocast,
            fmt,
        )
        build_s = time.perf_counter() - t0
        caches[name] = c = TeacherCache(tmp / f"{name}.safetensors")
        head = tuple(t.to(device, c.dtype) if t is not None else None for t in teacher_head(teacher))
        with torch.no_grad():
            cached_plain = batch_targets(item_plain, c.log_probs(batch, [], head).to(device), None)
            cached_method = batch_targets(item, c.log_probs(batch, twin_blocks, head).to(device), cf)
        klp, klm = kl_rows(full_plain, cached_plain), kl_rows(full_method, cached_method)
        size = (tmp / f"{name}.safetensors").stat().st_size
        tokens = (meta["blocks"] + meta["twins"]) * a.seq
        what = "final hidden states" if fmt == "hidden" else f"top-k {k} + |G| {g_idx.numel()}"
        print(
            f"{what}: {meta['bytes_per_token']} bytes per token ({size / tokens:.0f} on disk with the index); "
            f"{meta['blocks']} blocks + {meta['twins']} twins built in {build_s:.1f} s; KL(full || cached) plain KD "
            f"mean {klp.mean():.2e} max {klp.max():.2e}, method mean {klm.mean():.2e} max {klm.max():.2e} nats"
        )

    c = caches["hidden"]
    head = tuple(t.to(device, c.dtype) if t is not None else None for t in teacher_head(teacher))
    s_ids, s_mask = item.student_ids, item.student_mask
    x, x_mask = item_plain.student_ids, item_plain.student_mask

    def cached_plain_step():
        """What the trainer does with a hidden-state cache and plain KD: the hidden states go into the fused loss,
        which forms the teacher's logits a chunk at a time."""
        student.zero_grad(set_to_none=True)
        targets = Targets(hidden=c.hidden(batch, []), head=head)
        sums = student_loss_sums(
            student, student.get_output_embeddings(), student_rows(x, x_mask), targets, cfg, device, _Acc
        )
        combine(sums, cfg.kd.alpha, max(1, sums.tokens)).backward()

    def cached_method_step():
        with torch.no_grad():
            t = batch_targets(item, c.log_probs(batch, twin_blocks, head).to(device), cf)
        student_step(student, s_ids, s_mask, t, cfg, device)

    def live_plain_step():
        with torch.no_grad(), _Acc.autocast():
            z = teacher(input_ids=x.to(device), attention_mask=x_mask.to(device)).logits
        student_step(student, x, x_mask, targets_for_step(item_plain, z, cfg, None), cfg, device)

    topk = caches[f"topk{a.top_k[0]}"]

    def topk_plain_step():
        with torch.no_grad():
            t = batch_targets(item_plain, topk.log_probs(batch, []), None)
        student_step(student, x, x_mask, t, cfg, device)

    fns = {
        "ce_x": lambda: student_step(student, x, x_mask, None, cfg, device),
        "cached_plain": cached_plain_step,
        "topk_plain": topk_plain_step,
        "ce_x_and_twins": lambda: student_step(student, s_ids, s_mask, None, cfg, device),
        "cached_method": cached_method_step,
        "live_plain": live_plain_step,
    }
    timed = time_interleaved(fns, a.reps, device, warmup=0 if a.reps < 3 else 1)
    t = timed["wall"]
    print(f"\nmedian of {a.reps} interleaved repetitions, hidden-state cache, B x T = {a.batch} x {a.seq}")
    for name, v in t.items():
        print(f"  {name:>16}: wall {v:7.3f} s  cpu {timed['cpu'][name]:7.3f} s")
    print(f"  live teacher plain-KD step / cached plain-KD step = {t['live_plain'] / t['cached_plain']:.2f}x")
    print(
        f"  top-k {a.top_k[0]} cache plain-KD step / student-only CE step = {t['topk_plain'] / t['ce_x']:.2f}"
    )
    print()
    print(ratio_line("cached plain-KD step / student-only CE step", t["cached_plain"] / t["ce_x"], TARGET))
    print(
        ratio_line(
            "cached method step (CDA + mean) / CE step on the same rows",
            t["cached_method"] / t["ce_x_and_twins"],
            TARGET,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

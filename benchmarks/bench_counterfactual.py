"""What the counterfactual method costs in a training step beyond its unavoidable extra compute.

The method adds, per micro-batch: swapping gendered words and aligning the twin (`make_step_batch`), one teacher
forward on the twins of the rows that changed (unavoidable), and gathering + perturbing the teacher's targets
(`distill.counterfactual.perturb.step_targets`). With `augment.mode: append` the student also trains on the twin rows (unavoidable too). This
benchmark times, interleaved in one process, on the embedded SmolLM2-135M teacher and the embedded default's
24-layer student (`--student 6L`: the compression recipe's 6 layers; `--quick` swaps in a 2-layer random
model with the same tokenizer):

- perturb: `perturb.kind: mean`, `augment.mode: off`. Full method step vs plain KD step on x + the teacher
  forward on the k changed rows' twins timed alone.
- append:  `perturb.kind: mean`, `augment.mode: append`, p = 1 (the default recipe). Full method step vs a plain
  KD step on the same B + k rows [x; x~] built beforehand: the teacher and student see exactly the rows the method
  makes them see, so the difference is swapping, alignment, gathering and perturbation alone.

overhead = full / baseline - 1, target <= 5%. It also checks that rows with nothing to swap never reach the teacher
twice (the teacher's batch is B + number of changed rows, and never a twin of an unchanged row).

    python benchmarks/bench_counterfactual.py             # B x T = 4 x 128, as the default recipe
    python benchmarks/bench_counterfactual.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    STUDENTS,
    machine,
    pick_device,
    ratio_line,
    student_recipe,
    time_interleaved,
)

from distill.core.precision import autocast, resolve_mixed_precision  # noqa: E402
from distill.core.recipe import load_config  # noqa: E402
from distill.counterfactual.twins import Counterfactuals, make_step_batch  # noqa: E402
from distill.data.transfer import next_token_labels  # noqa: E402
from distill.teacher.targets import batch_targets  # noqa: E402
from distill.training.fused_loss import fused_kd_ce_sums  # noqa: E402
from distill.training.losses import combine  # noqa: E402

TARGET = 0.05
# A row with no gendered word at all: the method must leave it alone and not run the teacher on it twice.
NEUTRAL = (
    "The river ran fast under the old stone bridge, and the market opened early on the square. Rain fell on the "
    "roofs of the village while the bakery sold warm bread and the bus left for the city at noon. "
)


def load_models(cfg, quick: bool, device):
    """(teacher, student, tokenizer): the recipe's teacher and layer-subset student, or with quick a tiny random
    Llama with the same tokenizer and vocabulary (so the perturbation works on the real V)."""
    from distill.models.loading import build_student, load_teacher, resolve_teacher_path

    if quick:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        path = resolve_teacher_path(cfg.teacher, cfg.data.cache_dir)
        tok = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(0)
        small = dict(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        )
        teacher = LlamaForCausalLM(LlamaConfig(num_hidden_layers=4, **small)).eval().requires_grad_(False)
        student = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **small))
    else:
        teacher, tok, _ = load_teacher(cfg)
        student = build_student(cfg.student, teacher, seed=0)
    return teacher.to(device), student.to(device).train(), tok


def make_batch(tok, cf: Counterfactuals, batch: int, seq: int) -> torch.Tensor:
    """[batch, seq] blocks of the project's text (recipes/data: opening lines, most of them neutral, and the debug
    corpus, dense with gendered words) in a fixed shuffled order; the first row is neutral text."""
    lines = []
    for name in ("opening_lines.txt", "debug_corpus.txt"):
        for line in (ROOT / "recipes" / "data" / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                lines.append(line.strip())
    order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(0)).tolist()
    lines = [lines[i] for i in order]
    ids: list[int] = []
    while len(ids) < (batch - 1) * seq:
        for line in lines:
            ids.extend(tok(" " + line, add_special_tokens=False).input_ids)
    neutral = tok(NEUTRAL * (seq // 20 + 2), add_special_tokens=False).input_ids[:seq]
    x = torch.tensor([neutral] + [ids[i * seq : (i + 1) * seq] for i in range(batch - 1)], dtype=torch.long)
    assert not cf.builder.build(x[0]).changed, "the neutral row should have nothing to swap"
    return x


def loss_backward(student, ids, mask, labels, targets, cfg, device) -> None:
    """Student forward + fused KD/CE loss + backward, as train.py does it with distill.training.fused_loss (the same in
    every variant; the project's `kd_ce_sums` on full logits spends seconds in a CPU `index_select` here, whose
    noise would swamp the few percent this benchmark is after)."""
    out = student(
        input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, logits_to_keep=1
    )
    head = student.get_output_embeddings()
    a = cfg.kd.alpha
    sums = fused_kd_ce_sums(
        out.hidden_states[-1],
        head.weight,
        targets,
        labels.to(device),
        cfg.kd.temperature,
        bias=head.bias,
        grad_weights=(a, 1 - a),
    )
    combine(sums, a, max(1, sums.tokens)).backward()


def targets_for_step(item, t_logits, cfg, cf):
    """The live teacher's targets of a batch from its logits on the batch's teacher rows (as `LiveTeacher`)."""
    return batch_targets(item, torch.log_softmax(t_logits.float() / cfg.kd.temperature, dim=-1), cf)


def plain_targets(s_ids, t_logits, cfg):
    """Plain-KD targets of the student's rows s_ids, the first rows of t_logits."""
    return torch.log_softmax(t_logits.float() / cfg.kd.temperature, dim=-1)[: s_ids.shape[0]]


def method_step(x, teacher, student, cf, cfg, device, log: dict | None = None) -> None:
    """One micro-batch of the full method, as train.py runs it."""
    item = make_step_batch(x, cf)
    tin, tmask = item.teacher_inputs()
    if log is not None:
        log.update(
            teacher_rows=tin.shape[0], changed=item.twins["changed"].clone(), twin_rows=item.twin_rows.clone()
        )
    with torch.no_grad():
        t_logits = teacher(input_ids=tin.to(device), attention_mask=tmask.to(device)).logits
    targets = targets_for_step(item, t_logits, cfg, cf)
    del t_logits
    student.zero_grad(set_to_none=True)
    loss_backward(student, item.student_ids, item.student_mask, item.labels, targets, cfg, device)


def plain_step(t_ids, t_mask, s_ids, s_mask, teacher, student, cfg, device) -> None:
    """Plain KD on rows built beforehand: teacher forward on t_ids, log-softmax targets for the student's rows
    s_ids (the first rows of t_ids), student forward + backward. No swapping, alignment or perturbation."""
    with torch.no_grad():
        t_logits = teacher(input_ids=t_ids.to(device), attention_mask=t_mask.to(device)).logits
    targets = plain_targets(s_ids, t_logits, cfg)
    del t_logits
    student.zero_grad(set_to_none=True)
    loss_backward(student, s_ids, s_mask, next_token_labels(s_ids, s_mask), targets, cfg, device)


def teacher_forward(ids, mask, teacher, device) -> None:
    with torch.no_grad():
        teacher(input_ids=ids.to(device), attention_mask=mask.to(device))


def run_setting(name: str, overrides: list[str], a, device) -> dict[str, float]:
    recipe, base = student_recipe(a.student)
    cfg = load_config(recipe, base + overrides + ["augment.her_decider=rule"])
    teacher, student, tok = load_models(cfg, a.quick, device)
    cf = Counterfactuals(cfg, tok)
    x = make_batch(tok, cf, a.batch, a.seq)

    # Rows with nothing to swap never go through the teacher twice.
    log: dict = {}
    with autocast(device, a.precision):
        method_step(x, teacher, student, cf, cfg, device, log)
    changed, twin_rows = log["changed"], log["twin_rows"]
    assert not (twin_rows & ~changed).any(), "a row with nothing to swap was sent to the teacher twice"
    assert log["teacher_rows"] == x.shape[0] + int(changed.sum()), log
    print(
        f"\n== {name}: {' '.join(overrides)}; B x T = {x.shape[0]} x {x.shape[1]}; {int(changed.sum())} of "
        f"{x.shape[0]} rows changed; teacher batch {log['teacher_rows']} rows (unchanged rows: once)"
    )

    # The same rows every repetition: the twins are built once for the baselines (not timed). The teacher sees
    # [x; twins of changed rows] in every variant; the student sees x (perturb) or [x; twins] (append).
    item = make_step_batch(x, cf)
    t_ids, t_mask = item.teacher_inputs()
    s_ids, s_mask = item.student_ids, item.student_mask
    fns = {
        "method": lambda: method_step(x, teacher, student, cf, cfg, device),
        "plain_same_rows": lambda: plain_step(t_ids, t_mask, s_ids, s_mask, teacher, student, cfg, device),
    }
    if name == "perturb":  # the target's formula: plain KD on x, plus the extra teacher forward timed alone
        x_mask = item.x_mask
        fns["plain_x"] = lambda: plain_step(x, x_mask, x, x_mask, teacher, student, cfg, device)
        fns["extra_teacher"] = lambda: teacher_forward(
            t_ids[x.shape[0] :], t_mask[x.shape[0] :], teacher, device
        )
    # The method's own work, timed alone: swapping + alignment, and perturbed vs plain targets.
    with torch.no_grad(), autocast(device, a.precision):
        t_logits = teacher(input_ids=t_ids.to(device), attention_mask=t_mask.to(device)).logits
    fns["swap_align"] = lambda: make_step_batch(x, cf)
    fns["targets_method"] = lambda: targets_for_step(item, t_logits, cfg, cf)
    fns["targets_plain"] = lambda: plain_targets(s_ids, t_logits, cfg)

    def in_precision(fn):  # every variant in the run's precision, as the trainer's accelerator.autocast()
        def run():
            with autocast(device, a.precision):
                return fn()

        return run

    fns = {k: in_precision(f) for k, f in fns.items()}
    timed = time_interleaved(fns, a.reps, device, warmup=0 if a.reps < 3 else 1)
    t = timed["wall"]
    for k, v in t.items():
        print(f"  {k:>16}: wall {v:7.3f} s  cpu {timed['cpu'][k]:7.3f} s")
    base = t["plain_same_rows"]
    own = t["swap_align"] + t["targets_method"] - t["targets_plain"]
    r = {"direct": own / base, "end_to_end": t["method"] / base - 1}
    print(f"  method's own work: {own:.3f} s = {100 * r['direct']:.1f}% of the plain step on the same rows")
    print(f"  end to end: method step / plain step on the same rows - 1 = {100 * r['end_to_end']:.1f}%")
    if name == "perturb":
        r["target_formula"] = t["method"] / (t["plain_x"] + t["extra_teacher"]) - 1
        print(
            f"  method step / (plain step on x + extra teacher forward alone) - 1 = {100 * r['target_formula']:.1f}% "
            "(a forward of the k twins alone costs more than adding them to the batch)"
        )
    return r


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--student", default="24L", choices=list(STUDENTS), help="24L: the default's; 6L: compression"
    )
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--settings", nargs="+", default=["perturb", "append"], choices=["perturb", "append"])
    p.add_argument("--quick", action="store_true", help="tiny random models, 3 repetitions")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "no", "bf16"], help="as train.mixed_precision"
    )
    a = p.parse_args(argv)
    if a.quick:
        a.reps = min(a.reps, 3)
    return a


SETTINGS = {
    "perturb": ["perturb.kind=mean", "augment.mode=off"],
    "append": ["perturb.kind=mean", "augment.mode=append", "augment.p=1.0"],
}


def main(argv=None) -> int:
    a = parse(argv)
    os.chdir(ROOT)  # the recipe's relative paths (cache, word lists) are relative to the checkout
    device = pick_device(a.device)
    torch.manual_seed(0)
    print(
        f"machine: {machine()}; device {device}; {'tiny random models' if a.quick else 'SmolLM2-135M -> ' + a.student}"
    )
    a.precision, why = resolve_mixed_precision(a.precision, cuda=device.type == "cuda")
    print(f"median of {a.reps} interleaved repetitions; precision {a.precision} ({why})")
    results = {s: run_setting(s, SETTINGS[s], a, device) for s in a.settings}
    print()
    for s, r in results.items():
        print(f"{s} end_to_end_overhead {r['end_to_end']:.3g} (noisy: a difference of two timed steps)")
    for s, r in results.items():
        print(ratio_line(f"{s} counterfactual_overhead", r["direct"], TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A whole training step in float32 and in bf16 autocast, as model FLOP utilisation (MFU) of this machine's own
matmul peak measured in the same run; and fairdistill's plain-KD step against the ways a user would otherwise
write it, time and peak memory.

On the embedded SmolLM2-135M teacher and the embedded default's 24-layer student (`--student 6L`: the 6-layer
compression recipe's; `--quick`: tiny random models with the same tokenizer), B x T = 4 x 128 (the default's micro-batch), every step = forward + loss + backward + AdamW
step, timed interleaved in one process (each variant in each precision, A B C ... A B C ...). `--student gpt2-6L` /
`gpt2-large-18L`: random weights in the shapes of GPT-2 (124M) and GPT-2 large (774M) and their recipes' 6- and
18-layer students, from transformers' GPT2Config, no hub (benchmarks/_gpt2.py; `--quick`: 32 wide, same depth and
vocabulary); what `scripts/gpu_check.sh` times on a GPU.

| step | what |
|---|---|
| `ce` | student-only cross-entropy (the fused loss with no KD term) |
| `cached_kd` | plain KD from the hidden-state cache, as the trainer runs it (`teacher.cache`, `perturb.kind: none`) |
| `method` | the embedded default as the trainer runs it: the cache, two-sided CDA (append) + `mean` perturbation |
| `method_log_ratio` | the same with the log-ratio term (`kd.log_ratio` 0.25): what the term adds to the method's step |
| `live_kd` | plain KD with the teacher run every step (fairdistill without a cache: the peers' setting) |
| `trl_kd` | the same teacher, student, rows and precision; full student logits, TRL's `GKDTrainer.generalized_jsd_loss` (beta 0: forward KL) x T^2 + CE, in a hand loop |
| `hf_kd` | the same, with the HF distiller's loss (transformers `examples/research_projects/distillation/distiller.py`): `nn.KLDivLoss(reduction="batchmean")` on full-vocabulary softened distributions x T^2 + CE |

Model FLOPs per step (PaLM appendix B convention: 2 per multiply-add weight per token forward, 6 forward +
backward; attention scores 4 L d T per token forward, 12 L d T forward + backward; the tied output projection
counts, embedding lookups do not):

    student (fwd + bwd):      S x T x (6 N_S + 12 L_S d T)       S student rows (B, or B + k with CDA append)
    cached teacher head:      R x T x 2 d V                      R teacher rows (B, or B + k twins)
    live teacher (forward):   R x T x (2 N_T + 4 L_T d T)
    MFU = model FLOPs / step time / matmul peak of the same precision (an n^3 GEMM, `--peak-size`, measured here)
    tokens/s = S x T / step time (every student row, twins included: what `train/tokens_per_s` counts)

Peak memory (CPU): each fairdistill / peer plain-KD variant runs in a fresh child process that builds the models
and inputs, takes one step (the optimizer's moments exist from then on), then resets the resident-set high-water
mark and reports what the next step adds over what was resident before it (benchmarks/_common.py). On CUDA every
step's `torch.cuda.max_memory_allocated` (models, optimizer state and the step together) is read in-process, after
the timing. `--json FILE` writes every number to FILE.

    python benchmarks/bench_step.py                # both precisions, peers included (trl: pip install -e ".[bench]")
    python benchmarks/bench_step.py --quick
    python benchmarks/bench_step.py --student gpt2-6L --device cuda --precisions bf16 --batch 8 --seq 1024
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    STUDENTS,
    child_peak_bytes,
    gpu_peak,
    machine,
    matmul_params,
    matmul_peak,
    native_bf16,
    pick_device,
    ratio_line,
    report_child,
    run_child,
    student_recipe,
    time_interleaved,
)
from _gpt2 import STUDENTS as GPT2_STUDENTS  # noqa: E402
from _gpt2 import load_gpt2_models  # noqa: E402
from _peers import PEERS, have_trl, hf_distiller_loss, trl_loss  # noqa: E402
from _step_report import print_rows, write_json  # noqa: E402
from bench_counterfactual import load_models, make_batch  # noqa: E402

from distill.core.precision import autocast  # noqa: E402
from distill.core.recipe import load_config  # noqa: E402
from distill.counterfactual.twins import Counterfactuals, make_step_batch  # noqa: E402
from distill.models.attention import set_attention  # noqa: E402
from distill.teacher.cache import TeacherCache, build_cache, teacher_head  # noqa: E402
from distill.teacher.targets import Targets, batch_targets  # noqa: E402
from distill.training.losses import combine  # noqa: E402
from distill.training.step import student_loss_sums  # noqa: E402

TARGET_SPEEDUP, TARGET_MFU, TARGET_CACHED = 1.8, 0.40, 1.15
MODELS = {"gpt2-6L": "GPT-2 (124M)", "gpt2-large-18L": "GPT-2 large (774M)"}
STEPS = ("ce", "cached_kd", "method", "method_log_ratio", "live_kd", "trl_kd", "hf_kd")
MEMORY_STEPS = ("live_kd", "trl_kd", "hf_kd")


class _Acc:
    """What the trainer's helpers read from the Accelerator: `autocast()` in the run's precision."""

    def __init__(self, device, precision: str):
        self.device, self.precision = device, precision

    def autocast(self):
        return autocast(self.device, self.precision)


class Setup:
    """Models, rows, caches and one step function per (variant, precision)."""

    def __init__(self, a, device):
        self.device = device
        gpt2 = GPT2_STUDENTS.get(a.student)
        recipe, overrides = (ROOT / "recipes" / gpt2[0], []) if gpt2 else student_recipe(a.student)
        self.cfg = load_config(
            recipe,
            overrides
            + ["augment.mode=append", "perturb.kind=mean", "augment.her_decider=rule"]
            + [f"train.attention={a.attention}"],
        )
        if gpt2:  # random weights in GPT-2's shapes (benchmarks/_gpt2.py)
            self.teacher, self.student, tok = load_gpt2_models(self.cfg, gpt2[1], a.quick, device)
        else:
            self.teacher, self.student, tok = load_models(self.cfg, a.quick, device)
        # one student serves every step, the peers' included, so they all run the same attention kernel
        self.attention = set_attention(self.student, self.cfg.train.attention)
        self.teacher.eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=1e-6)
        self.cf = Counterfactuals(self.cfg, tok)
        self.blocks = make_batch(tok, self.cf, a.batch, a.seq)
        self.batch = list(range(a.batch))
        self.item = make_step_batch(self.blocks, self.cf, self.batch)
        self.plain = make_step_batch(self.blocks, None)
        self.twin_blocks = self.item.twin_blocks()
        self.k = len(self.twin_blocks)
        self.caches: dict[str, tuple[TeacherCache, tuple]] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="fairdistill-bench-step-"))
        self.cfg.data.cache_dir = str(self.tmp)
        self.table = self.cf.precompute(self.cfg, self.blocks)  # the twins the cache build reads

    def cache(self, precision: str):
        if precision not in self.caches:
            path = self.tmp / f"{precision}.safetensors"
            g_idx = self.cf.builder.g_mask.nonzero(as_tuple=True)[0]
            acc = _Acc(self.device, precision)
            build_cache(
                path,
                self.teacher,
                self.blocks,
                self.table,
                g_idx,
                self.cfg.kd.temperature,
                1,
                len(self.batch),
                self.device,
                acc.autocast,
                "hidden",
            )
            c = TeacherCache(path)
            head = tuple(
                t.to(self.device, c.dtype) if t is not None else None for t in teacher_head(self.teacher)
            )
            self.caches[precision] = (c, head)
        return self.caches[precision]

    def _student(self, item, targets: Targets, acc, kd=True, log_ratio=0.0):
        head = self.student.get_output_embeddings()
        sides = self.sides() if log_ratio else None
        sums = student_loss_sums(self.student, head, item, targets, self.cfg, self.device, acc, sides)
        combine(sums, self.cfg.kd.alpha if kd else 0.0, max(1, sums.tokens), log_ratio).backward()

    def sides(self):
        """The log-ratio term's side pairs (`kd.log_ratio`), from the method's exchange, built once."""
        if getattr(self, "_sides", None) is None:
            from distill.training.log_ratio import gendered_sides

            self._sides = gendered_sides(self.cf.exchange(torch.device("cpu"))).to(self.device)
        return self._sides

    def _opt(self):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def _teacher_logits(self, acc):
        x = self.plain.x.to(self.device)
        with torch.no_grad(), acc.autocast():
            return self.teacher(input_ids=x, attention_mask=self.plain.x_mask.to(self.device)).logits

    def _peer(self, acc, kd_loss):
        """A hand-written plain-KD step on full student logits: teacher forward, student forward, loss, backward."""
        t_logits = self._teacher_logits(acc)
        ids = self.plain.student_ids.to(self.device)
        labels = self.plain.labels.to(self.device)
        a, T = self.cfg.kd.alpha, self.cfg.kd.temperature
        with acc.autocast():
            s_logits = self.student(
                input_ids=ids, attention_mask=self.plain.student_mask.to(self.device)
            ).logits
        s_logits, t_logits = s_logits.float(), t_logits.float()
        n = int((labels != -100).sum())
        kd = kd_loss(s_logits, t_logits, labels, T)
        ce = F.cross_entropy(s_logits.flatten(0, 1), labels.flatten(), reduction="sum", ignore_index=-100)
        ((a * kd + (1 - a) * ce) / n).backward()

    def step_fn(self, name: str, precision: str):
        acc = _Acc(self.device, precision)
        it, pl = self.item, self.plain

        def ce():
            self._student(pl, Targets(), acc, kd=False)
            self._opt()

        def cached_kd():
            c, head = self.cache(precision)
            self._student(pl, Targets(hidden=c.hidden(self.batch, []).to(self.device), head=head), acc)
            self._opt()

        def method(log_ratio=0.0):
            c, head = self.cache(precision)
            with torch.no_grad():
                logp = c.log_probs(self.batch, self.twin_blocks, head).to(self.device)
            targets = Targets(logq=batch_targets(it, logp, self.cf))
            del logp
            self._student(it, targets, acc, log_ratio=log_ratio)
            self._opt()

        def method_log_ratio():
            method(log_ratio=0.25)

        def live_kd():
            self._student(pl, Targets(logits=self._teacher_logits(acc)), acc)
            self._opt()

        def trl_kd():
            self._peer(acc, trl_loss)
            self._opt()

        def hf_kd():
            self._peer(acc, hf_distiller_loss)
            self._opt()

        return locals()[name]

    def rows(self, name: str) -> int:
        """The student's rows in one step: B, or B + k for the method (CDA append)."""
        return len(self.batch) + self.k if name.startswith("method") else len(self.batch)

    def flops(self, name: str, seq: int) -> float:
        """Model FLOPs of one step (see the module docstring)."""
        s_cfg, t_cfg = self.student.config, self.teacher.config
        d, V = s_cfg.hidden_size, s_cfg.vocab_size
        B = len(self.batch)
        rows_s = self.rows(name)
        student = rows_s * seq * (6 * matmul_params(self.student) + 12 * s_cfg.num_hidden_layers * d * seq)
        if name == "ce":
            return student
        if name in ("cached_kd", "method", "method_log_ratio"):
            return student + rows_s * seq * 2 * t_cfg.hidden_size * V
        teacher = (
            B
            * seq
            * (2 * matmul_params(self.teacher) + 4 * t_cfg.num_hidden_layers * t_cfg.hidden_size * seq)
        )
        return student + teacher


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--student",
        default="24L",
        choices=list(STUDENTS) + list(GPT2_STUDENTS),
        help="24L: the default's; 6L: compression; gpt2-6L, gpt2-large-18L: random weights in GPT-2's shapes",
    )
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        choices=["no", "bf16"],
        help="default: both where bf16 is native, float32 only where it is emulated",
    )
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the child processes that measure peak memory on CPU (CUDA's is read in-process)",
    )
    p.add_argument("--json", default=None, help="also write every number to this JSON file")
    p.add_argument("--peak-size", type=int, default=2048, help="n of the n^3 GEMM that measures the peak")
    p.add_argument(
        "--attention",
        default="auto",
        choices=["auto", "sdpa", "eager"],
        help="the student's attention kernel (train.attention; auto, the default: sdpa for SmolLM2)",
    )
    p.add_argument("--quick", action="store_true", help="tiny random models, one repetition")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.peak_size = 1, min(a.peak_size, 512)
    if a.precisions is None and not a.child:
        native, why = native_bf16(pick_device(a.device))
        a.precisions = ["no", "bf16"] if native else ["no"]
        if not native:
            print(f"bf16 is emulated here ({why}), about 100x slower than float32: float32 only")
    return a


def child_main(a, device) -> None:
    name, precision = a.child
    s = Setup(a, device)
    fn = s.step_fn(name, precision)
    fn()  # the optimizer's moments and the allocator's pools exist from here on, as in a run
    report_child({"peak_bytes": child_peak_bytes(fn)})


def child_args(a, name: str, precision: str) -> list[str]:
    args = ["--child", name, precision, "--batch", str(a.batch), "--seq", str(a.seq), "--device", "cpu"]
    args += ["--student", a.student, "--attention", a.attention]
    return args + (["--quick"] if a.quick else [])


def measure(a, s: Setup, steps: list[str], device) -> list[dict]:
    """Every (step, precision) timed interleaved after one untimed warm-up (which builds each precision's cache);
    on CUDA also each one's peak memory. One dict per pair: seconds, FLOPs, tokens, tokens/s, MFU, memory."""
    fns = {}
    for name in steps:
        for prec in a.precisions:
            fn = s.step_fn(name, prec)
            fn()
            fns[(name, prec)] = fn
    timed = time_interleaved({f"{n}/{p}": f for (n, p), f in fns.items()}, a.reps, device, warmup=0)
    rows = []
    for (name, prec), fn in fns.items():
        wall, cpu = timed["wall"][f"{name}/{prec}"], timed["cpu"][f"{name}/{prec}"]
        flop, tokens = s.flops(name, a.seq), s.rows(name) * a.seq
        peak, added = gpu_peak(fn, device) if device.type == "cuda" else (None, None)
        rows.append(
            {
                "step": name,
                "precision": prec,
                "wall_s": wall,
                "cpu_s": cpu,
                "flop": flop,
                "tokens": tokens,
                "tokens_per_s": tokens / wall,
                "mfu": flop / wall / a.peaks[prec],
                "mfu_cpu": flop / cpu / a.cpu_peaks[prec],
                "peak_bytes": peak,
                "added_bytes": added,
            }
        )
    return rows


def cpu_memory(a, steps: list[str]) -> dict:
    """{(step, precision): bytes} a step adds on the CPU, each in a fresh child process (MEMORY_STEPS only)."""
    mem = {}
    for name in [n for n in MEMORY_STEPS if n in steps]:
        for prec in a.precisions:
            mem[(name, prec)] = run_child(__file__, child_args(a, name, prec))["peak_bytes"]
    print("\npeak memory a step adds (fresh process per variant, after one warm-up step)")
    for (name, prec), b in mem.items():
        print(f"  {name:>10} {prec:>9} +{b / 2**20:8.1f} MiB")
    return mem


def ratio_lines(a, steps: list[str], rows: list[dict], mem: dict) -> list[str]:
    """The targets' lines: bf16 speedup and MFU, cached KD against CE, fairdistill against the peers."""
    t = {(r["step"], r["precision"]): r for r in rows}
    lines, main_steps = [], [n for n in ("method", "cached_kd", "ce") if n in steps]
    if "no" in a.precisions and "bf16" in a.precisions:
        for name in main_steps:
            no, bf = t[(name, "no")], t[(name, "bf16")]
            print(f"{name} step bf16 speedup by CPU time {no['cpu_s'] / bf['cpu_s']:.2f}x")
            r = no["wall_s"] / bf["wall_s"]
            lines.append(
                ratio_line(f"{name} step bf16 speedup (float32 / bf16 wall)", r, TARGET_SPEEDUP, False)
            )
    if "bf16" in a.precisions:
        for name in main_steps:
            print(f"{name} step bf16 MFU by CPU time {100 * t[(name, 'bf16')]['mfu_cpu']:.1f}%")
            lines.append(ratio_line(f"{name} step bf16 MFU", t[(name, "bf16")]["mfu"], TARGET_MFU, False))
    for prec in a.precisions:
        if "cached_kd" in steps and "ce" in steps:
            r = t[("cached_kd", prec)]["wall_s"] / t[("ce", prec)]["wall_s"]
            lines.append(ratio_line(f"{prec} cached plain-KD step / student-only CE step", r, TARGET_CACHED))
        for peer in [p for p in PEERS if p in steps and "live_kd" in steps]:
            r = t[("live_kd", prec)]["wall_s"] / t[(peer, prec)]["wall_s"]
            lines.append(ratio_line(f"{prec} fairdistill plain-KD step / {peer} step, time", r, 1.0))
            if mem:
                r = mem[("live_kd", prec)] / mem[(peer, prec)]
                lines.append(
                    ratio_line(f"{prec} fairdistill plain-KD step / {peer} step, peak memory", r, 1.0)
                )
    return lines


def main(argv=None) -> int:
    a = parse(argv)
    os.chdir(ROOT)
    device = pick_device(a.device)
    torch.manual_seed(0)
    if a.child:
        child_main(a, device)
        return 0
    steps = [s for s in a.steps if s not in PEERS or have_trl() or s == "hf_kd"]
    skipped = {}
    if "trl_kd" in a.steps and "trl_kd" not in steps:
        skipped["trl_kd"] = 'trl is not installed (pip install -e ".[bench]", which `make bench` does)'
        print(f"{skipped['trl_kd']}: skipping trl_kd")
    random = "random " if a.student in GPT2_STUDENTS else ""
    models = f"{random}{MODELS.get(a.student, 'SmolLM2-135M')} -> {a.student}"
    if a.quick:
        models = f"tiny random models ({a.student}'s depths)" if random else "tiny random models"
    print(f"machine: {machine()}; device {device}; {models}")
    a.peaks, a.cpu_peaks = {}, {}
    for prec in a.precisions:
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        a.peaks[prec], a.cpu_peaks[prec] = matmul_peak(device, dtype, a.peak_size, 5 if not a.quick else 2)
        print(
            f"matmul peak {a.peak_size}^3 {dtype}: {a.peaks[prec] / 1e9:.1f} GFLOP/s of wall time, "
            f"{a.cpu_peaks[prec] / 1e9:.1f} of CPU time",
            flush=True,
        )
    s = Setup(a, device)
    print(
        f"B x T = {a.batch} x {a.seq}; {s.k} of {a.batch} rows have a twin; student {matmul_params(s.student) / 1e6:.1f}M "
        f"matmul weights, teacher {matmul_params(s.teacher) / 1e6:.1f}M; student attention {s.attention} "
        f"(train.attention={a.attention})"
    )
    rows = measure(a, s, steps, device)
    print_rows(rows, a.reps)
    mem = cpu_memory(a, steps) if not a.no_memory and device.type == "cpu" else {}
    print()
    lines = ratio_lines(a, steps, rows, mem)
    if a.json:
        write_json(a, s, device, models, rows, skipped, mem, lines)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

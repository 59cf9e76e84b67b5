"""KD + CE loss, forward + backward: peak memory and time of `distill.training.fused_loss.fused_kd_ce_sums` against a
straightforward full-vocab implementation, TRL's `GKDTrainer.generalized_jsd_loss` (beta = 0, forward KL) and the
project's `kd_ce_sums` on materialised logits, on the same inputs in the same run.

Inputs are what the trainer has after the student's body: final hidden states h [N, H], the output projection
W [V, H], teacher log-targets [N, V] at temperature T, labels [N] (the last position of every row is -100, as
`next_token_labels` makes them). Every variant computes alpha * KD + (1 - alpha) * CE from h, W and the targets
and backpropagates into h and W; memory counts everything the loss adds beyond its inputs (the logits, the
softmax buffers, the gradients h.grad and W.grad).

    python benchmarks/bench_kd_loss.py                    # CPU: B x T = 8 x 256 (8 x 1024 needs ~10 GB, minutes)
    python benchmarks/bench_kd_loss.py --seq 1024         # the full size
    python benchmarks/bench_kd_loss.py --quick            # seconds
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import (  # noqa: E402
    child_peak_bytes,
    gpu_peak_bytes,
    machine,
    pick_device,
    ratio_line,
    report_child,
    run_child,
    time_interleaved,
)

from distill.core.defaults import CHUNK_SIZE  # noqa: E402
from distill.training.fused_loss import fused_kd_ce_sums  # noqa: E402
from distill.training.losses import kd_ce_sums  # noqa: E402

# The student's hidden size that goes with each vocabulary: DistilGPT-2 (GPT-2 tokenizer) and the embedded
# SmolLM2-135M default (its layers keep the teacher's width).
HIDDEN_FOR_VOCAB = {50257: 768, 49152: 576}
ALPHA = 0.5
TARGET_MEMORY, TARGET_TIME = 0.3, 0.7


def make_inputs(n_rows: int, seq: int, vocab: int, hidden: int, temperature: float, device, dtype, seed=0):
    """h [N, H], W [V, H] (both require grad), teacher log-targets [N, V] float32, labels [N]."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    N = n_rows * seq
    h = (torch.randn(N, hidden, generator=g) * 1.0).to(device, dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * hidden**-0.5 * 2).to(device, dtype).requires_grad_()
    # Built in place, so making the inputs never needs two [N, V] tensors at once.
    logq = (torch.randn(N, vocab, generator=g) * 2.5).to(device)
    logq.div_(temperature)
    logq.sub_(torch.logsumexp(logq, dim=-1, keepdim=True))
    labels = torch.randint(0, vocab, (n_rows, seq), generator=g)
    labels[:, -1] = -100
    return h, w, logq, labels.reshape(-1).to(device)


def loss_full(h, w, logq, labels, T):
    """The textbook version: materialise the logits, log-softmax, F.kl_div + F.cross_entropy on valid rows."""
    z = (h @ w.t()).float()
    m = labels != -100
    z, t, y = z[m], logq[m], labels[m]
    kd = F.kl_div(F.log_softmax(z / T, dim=-1), t, log_target=True, reduction="sum") * T**2
    ce = F.cross_entropy(z, y, reduction="sum")
    return kd, ce


def loss_trl(h, w, logq, labels, T):
    """TRL's generalized JSD at beta = 0 (KL(teacher || student)) + F.cross_entropy on the same logits.

    TRL takes teacher logits and divides both sides by T; passing z / T and the log-targets at temperature 1 gives
    exactly our targets (log-softmax of log-probabilities is the identity) and the same work TRL does inside."""
    from trl.experimental.gkd import GKDTrainer

    z = (h @ w.t()).float()
    kd = (
        GKDTrainer.generalized_jsd_loss(z / T, logq, labels, beta=0.0, temperature=1.0, reduction="sum")
        * T**2
    )
    ce = F.cross_entropy(z, labels, reduction="sum", ignore_index=-100)
    return kd, ce


def loss_kd_ce_sums(h, w, logq, labels, T, chunk_size=1024):
    """`kd.fused: false` (and FSDP / DeepSpeed): the model's full logits, then the project's row-chunked `kd_ce_sums`."""
    s = kd_ce_sums(h @ w.t(), logq, labels, T, chunk_size)
    return s.kd, s.ce


def loss_fused(h, w, logq, labels, T, chunk_size=CHUNK_SIZE):
    """Ours as train.py calls it: gradients formed in the forward for alpha * kd + (1 - alpha) * ce."""
    s = fused_kd_ce_sums(h, w, logq, labels, T, chunk_size, grad_weights=(ALPHA, 1 - ALPHA))
    return s.kd, s.ce


def loss_fused_recompute(h, w, logq, labels, T, chunk_size=CHUNK_SIZE):
    """Ours without the grad_weights promise: backward recomputes each chunk's logits."""
    s = fused_kd_ce_sums(h, w, logq, labels, T, chunk_size)
    return s.kd, s.ce


VARIANTS = {
    "full": loss_full,
    "trl": loss_trl,
    "kd_ce_sums": loss_kd_ce_sums,
    "fused": loss_fused,
    "fused_recompute": loss_fused_recompute,
}


def step(fn, h, w, logq, labels, T):
    """One loss forward + backward, as the trainer does it; grads are replaced, not accumulated."""
    h.grad = w.grad = None
    kd, ce = fn(h, w, logq, labels, T)
    (ALPHA * kd + (1 - ALPHA) * ce).backward()
    return kd.detach(), ce.detach()


def have_trl() -> bool:
    try:
        from trl.experimental.gkd import GKDTrainer  # noqa: F401
    except Exception:
        return False
    return True


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=[50257, 49152])
    p.add_argument(
        "--hidden", type=int, default=None, help="default: 768 for V=50257, 576 for 49152, else 768"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=None, help="default: 256 on CPU, 1024 on GPU")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--dtype", default=None, help="float32 | bfloat16; default float32 on CPU, bfloat16 on GPU"
    )
    p.add_argument("--no-trl", action="store_true")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["full", "trl", "fused", "fused_recompute", "kd_ce_sums"],
        choices=list(VARIANTS),
        help="what to run (full and fused always run)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: B x T = 2 x 128, chunk 64, one repetition, full/trl/fused only (the ratios at this size "
        "say little: the weight gradient, the same in every variant, dominates)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.device = pick_device(a.device)
    if a.quick:
        a.batch, a.seq, a.reps, a.chunk_size = 2, a.seq or 128, 1, min(a.chunk_size, 64)
        a.variants = [v for v in a.variants if v in ("full", "trl", "fused")]
    a.seq = a.seq or (1024 if a.device.type == "cuda" else 256)
    a.dtype = getattr(torch, a.dtype or ("bfloat16" if a.device.type == "cuda" else "float32"))
    return a


def child_args(a, vocab: int, variant: str) -> list[str]:
    return [
        "--child",
        variant,
        "--vocab",
        str(vocab),
        "--hidden",
        str(hidden_for(a, vocab)),
        "--batch",
        str(a.batch),
        "--seq",
        str(a.seq),
        "--temperature",
        str(a.temperature),
        "--chunk-size",
        str(a.chunk_size),
        "--device",
        "cpu",
        "--dtype",
        str(a.dtype).removeprefix("torch."),
    ]


def hidden_for(a, vocab: int) -> int:
    return a.hidden or HIDDEN_FOR_VOCAB.get(vocab, 768)


def fn_for(a, variant: str):
    fn = VARIANTS[variant]
    if variant.startswith("fused"):
        return lambda h, w, q, y, T: fn(h, w, q, y, T, a.chunk_size)
    return fn


def child_main(a) -> None:
    torch.manual_seed(0)
    vocab = a.vocab[0]
    h, w, logq, labels = make_inputs(
        a.batch, a.seq, vocab, hidden_for(a, vocab), a.temperature, a.device, a.dtype
    )
    fn = fn_for(a, a.child)
    peak = child_peak_bytes(lambda: step(fn, h, w, logq, labels, a.temperature))
    report_child({"peak_bytes": peak})


def check_and_time(a, vocab: int, variants: list[str]) -> dict:
    """Checks every variant against `full` on the same inputs, then times them interleaved (and takes GPU peaks)."""
    h, w, logq, labels = make_inputs(
        a.batch, a.seq, vocab, hidden_for(a, vocab), a.temperature, a.device, a.dtype
    )
    T = a.temperature
    # Same loss and gradients (float32 here; the float64 checks to 1e-10 are in tests/unit/training/test_fused_loss.py). This
    # also runs every variant once before timing, as a warm-up.
    ref_kd, ref_ce = step(loss_full, h, w, logq, labels, T)
    ref_gh, ref_gw = h.grad.clone(), w.grad.clone()
    for v in variants:
        if v == "full":
            continue
        kd, ce = step(fn_for(a, v), h, w, logq, labels, T)
        rel = max(float((kd - ref_kd).abs() / ref_kd.abs()), float((ce - ref_ce).abs() / ref_ce.abs()))
        gerr = max(
            float((h.grad - ref_gh).abs().max() / ref_gh.abs().max()),
            float((w.grad - ref_gw).abs().max() / ref_gw.abs().max()),
        )
        print(f"  {v:>15}: loss rel. diff vs full {rel:.1e}, grad max diff / max |grad| {gerr:.1e}")
    ref_gh = ref_gw = h.grad = w.grad = None

    fns = {v: functools.partial(step, fn_for(a, v), h, w, logq, labels, T) for v in variants}
    timed = time_interleaved(fns, a.reps, a.device, warmup=0)
    peaks = {v: gpu_peak_bytes(fns[v], a.device) for v in variants} if a.device.type == "cuda" else {}
    return {"times": timed["wall"], "cpu_times": timed["cpu"], "peaks": peaks}


def bench_vocab(a, vocab: int, variants: list[str]) -> dict:
    N = a.batch * a.seq
    print(
        f"\n== V={vocab}, H={hidden_for(a, vocab)}, B x T = {a.batch} x {a.seq} = {N} positions, T={a.temperature}"
    )
    r = check_and_time(a, vocab, variants)
    if a.device.type != "cuda":  # the inputs above are freed by now; each variant gets a fresh process
        r["peaks"] = {v: run_child(__file__, child_args(a, vocab, v))["peak_bytes"] for v in variants}
    for v in variants:
        print(
            f"  {v:>15}: wall {r['times'][v]:7.3f} s  cpu {r['cpu_times'][v]:7.3f} s  "
            f"peak +{r['peaks'][v] / 2**20:8.1f} MiB"
        )
    return r


def main(argv=None) -> int:
    a = parse(argv)
    if a.child:
        child_main(a)
        return 0
    variants = [v for v in VARIANTS if v in {"full", "fused", *a.variants}]
    if "trl" in variants and (a.no_trl or not have_trl()):
        variants.remove("trl")
        if not a.no_trl:
            print(
                'trl is not installed (pip install -e ".[bench]", which `make bench` does): skipping the TRL comparison'
            )
    print(f"machine: {machine()}; device {a.device}; chunk_size {a.chunk_size}; median of {a.reps} reps")
    results = {v: bench_vocab(a, v, variants) for v in a.vocab}
    print()
    lines = []
    for vocab, r in results.items():
        t, c, m = r["times"], r["cpu_times"], r["peaks"]
        for base in [v for v in variants if v != "fused"]:
            print(
                f"V={vocab} fused vs {base}: peak memory {m['fused'] / m[base]:.3f}x, "
                f"wall time {t['fused'] / t[base]:.3f}x, cpu time {c['fused'] / c[base]:.3f}x"
            )
        if "trl" in m:  # the public implementation: reported, its own targets are the same
            print(ratio_line(f"V={vocab} vs_trl peak_memory_ratio", m["fused"] / m["trl"], TARGET_MEMORY))
            print(ratio_line(f"V={vocab} vs_trl time_ratio", t["fused"] / t["trl"], TARGET_TIME))
        lines.append(ratio_line(f"V={vocab} peak_memory_ratio", m["fused"] / m["full"], TARGET_MEMORY))
        lines.append(ratio_line(f"V={vocab} time_ratio", t["fused"] / t["full"], TARGET_TIME))
    for line in lines:  # last: ours vs the straightforward implementation, next to the targets
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

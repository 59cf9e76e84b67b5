"""The data pipeline: preprocessing throughput, in-process vs worker processes, and what a step waits for its inputs.

With the embedded SmolLM2 tokenizer and the project's text (recipes/data, repeated to `--docs` documents):

- tokenizing + packing (`distill.data.transfer.tokenize_documents` + `pack`): tokens/s with 0 and `--workers` workers;
- building the counterfactual twins of every block (`Counterfactuals.precompute`): tokens/s, 0 and `--workers`;
- a step's input building (`make_step_batch`: rows, twins, CDA draws) for the default recipe's micro-batch of
  4 x 128, from the precomputed table vs built on the fly, next to one full method step (teacher on x and the
  changed rows' twins, targets, student forward + backward) on the same rows: the wait share = inputs / step.
  Target: <= 5%. Training runs log the same share as `train/data_wait_frac`.

    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, pick_device, ratio_line, time_interleaved  # noqa: E402
from bench_counterfactual import load_models, make_batch, method_step  # noqa: E402

from distill.core.recipe import load_config  # noqa: E402
from distill.counterfactual.twins import Counterfactuals, make_step_batch  # noqa: E402
from distill.data.transfer import pack, tokenize_documents  # noqa: E402

TARGET = 0.05


def corpus(n: int) -> list[str]:
    lines = []
    for name in ("opening_lines.txt", "debug_corpus.txt"):
        for line in (ROOT / "recipes" / "data" / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                lines.append(line.strip())
    return [" ".join(lines[(i * 7) % len(lines) : (i * 7) % len(lines) + 5]) for i in range(n)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.docs, a.reps = 2000, 1
    os.chdir(ROOT)
    device = pick_device(a.device)
    print(
        f"machine: {machine()}; device {device}; {'tiny random models' if a.quick else 'SmolLM2-135M -> 6L'}"
    )
    # the word rule decides her/his: this measures building twins (the teacher's decisions are made once per
    # transfer set; `distill inspect-twins` reports their cost)
    cfg = load_config(
        ROOT / "recipes" / "smollm2-135m_to_6L.yaml",
        ["augment.mode=append", "perturb.kind=mean", "augment.her_decider=rule"],
    )
    teacher, student, tok = load_models(cfg, a.quick, device)
    docs = corpus(a.docs)
    blocks = None
    for workers in (0, a.workers):
        t0 = time.perf_counter()
        blocks = pack(tokenize_documents(iter(docs), tok, workers=workers), 128, tok.eos_token_id)
        dt = time.perf_counter() - t0
        print(
            f"tokenize + pack, {workers} workers: {blocks.numel() / dt:,.0f} tokens/s ({blocks.shape[0]} blocks)"
        )
    n = min(blocks.shape[0], 2000 if not a.quick else 200)
    for workers in (0, a.workers):
        cfg.data.num_workers = workers
        cfg.data.cache_dir = tempfile.mkdtemp()
        cf = Counterfactuals(cfg, tok)
        t0 = time.perf_counter()
        cf.precompute(cfg, blocks[:n])
        dt = time.perf_counter() - t0
        print(f"twins of {n} blocks, {workers} workers: {n * 128 / dt:,.0f} tokens/s")

    rows = list(range(4))
    x = make_batch(tok, cf, 4, 128)
    cf_live = Counterfactuals(cfg, tok)
    fns = {
        "inputs_table": lambda: make_step_batch(blocks[rows], cf, rows),
        "inputs_built": lambda: make_step_batch(x, cf_live),
        "method_step": lambda: method_step(x, teacher, student, cf_live, cfg, device),
    }
    timed = time_interleaved(fns, a.reps, device, warmup=0 if a.reps < 3 else 1)
    t = timed["wall"]
    print(f"\nmedian of {a.reps} interleaved repetitions, B x T = 4 x 128")
    for k, v in t.items():
        print(f"  {k:>14}: wall {v:8.4f} s")
    print(f"  inputs built on the fly / method step = {t['inputs_built'] / t['method_step']:.3f}")
    print()
    print(
        ratio_line(
            "data wait share of a method step (precomputed twins)",
            t["inputs_table"] / t["method_step"],
            TARGET,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sampling speed of the embedded teacher in float32, under bf16 autocast, and as a bf16 copy of its weights.

Side by side in one process, alternated over rounds, so the ratios hold on a loaded machine where absolute times
drift: `OMP_NUM_THREADS=1 python benchmarks/bench_decode_precision.py --rounds 2`. Needs the converted teacher
(`make distill` converts it once into .cache/fairdistill/embedded/).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=24)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ROOT / ".cache" / "fairdistill" / "embedded" / "smollm2-135m"
    if not (path / "config.json").is_file():
        sys.stderr.write(f"{path} not found: run `make distill` once to convert the embedded teacher\n")
        return 2
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    fp32 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    enc = tok(["The nurse said that"] * args.prompts, return_tensors="pt", padding=True)

    def timed(model, autocast: bool) -> float:
        torch.manual_seed(0)
        t = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.generate(
                **enc,
                max_new_tokens=args.new_tokens,
                do_sample=True,
                top_p=0.95,
                pad_token_id=tok.eos_token_id,
            )
        return time.perf_counter() - t

    for r in range(args.rounds):
        a, b, c = timed(fp32, False), timed(fp32, True), timed(bf16, False)
        print(  # noqa: T201
            f"round {r}: float32 {a:.2f} s | bf16 autocast {b:.2f} s ({a / b:.2f}x) | bf16 weights {c:.2f} s "
            f"({a / c:.2f}x)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluation generation: `distill.models.sampling.generate` batched (KV cache, left padding) against one
prompt at a time, on the same prompts and settings, with identical outputs asserted.

Prompts are the eval suite's profession templates (eval/data/profession_templates.json, the first prompt of each
of the 18 groups), sampled as `eval/quick.yaml` does (top-p 0.95, temperature 1, seed 0). The model is the
embedded SmolLM2-135M teacher; `--quick` uses a tiny random Llama with its tokenizer.

    python benchmarks/bench_generation.py                       # 18 prompts x 3 samples x 24 tokens, batch 54
    python benchmarks/bench_generation.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import ROOT, machine, pick_device, ratio_line, sync  # noqa: E402

from distill.core.recipe import load_config  # noqa: E402
from distill.models.sampling import generate  # noqa: E402

TARGET = 4.0


def prompts(n: int) -> list[str]:
    """The first prompt of each profession group, in file order, cycled to n."""
    groups = json.loads((ROOT / "eval" / "data" / "profession_templates.json").read_text())
    first = [next(iter(g.values()))[0] for g in groups.values()]
    return [first[i % len(first)] for i in range(n)]


def load_model(quick: bool, device):
    from distill.models.loading import load_teacher, resolve_teacher_path

    cfg = load_config(ROOT / "recipes" / "smollm2-135m_to_6L.yaml")
    if quick:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(resolve_teacher_path(cfg.teacher, cfg.data.cache_dir))
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tok),
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
                tie_word_embeddings=True,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
            )
        )
    else:
        model, tok, _ = load_teacher(cfg)
    return model.to(device).eval(), tok


def timed(fn, device) -> tuple[object, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=18)
    p.add_argument("--samples", type=int, default=3, help="continuations per prompt")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=None, help="default: all rows in one batch")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny random model, 8 prompts x 2 samples x 16 tokens, greedy: a random model's next-token "
        "distribution is nearly flat over 49k tokens, so the last-bit difference between a batched and a "
        "one-row matmul can flip a sampled token; a trained model's peaked distributions do not have that problem",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.prompts, a.samples, a.max_new_tokens, a.temperature = 8, 2, 16, 0.0
    os.chdir(ROOT)  # the recipe's relative cache path
    device = pick_device(a.device)
    model, tok = load_model(a.quick, device)
    texts = prompts(a.prompts)
    rows = a.prompts * a.samples
    batch = a.batch_size or rows
    kwargs = dict(
        n_per_prompt=a.samples,
        max_new_tokens=a.max_new_tokens,
        top_p=0.95,
        temperature=a.temperature,
        seed=0,
        progress=False,
        device=device,
    )
    print(f"machine: {machine()}; device {device}; {'tiny random Llama' if a.quick else 'SmolLM2-135M'}")
    print(
        f"{a.prompts} prompts x {a.samples} samples x {a.max_new_tokens} new tokens, top-p 0.95, "
        f"temperature {a.temperature:g}; batched: batch_size {batch}"
    )
    generate(model, tok, texts[:2], **{**kwargs, "max_new_tokens": 2})  # warm-up
    t_one, t_batch = [], []
    for _ in range(a.reps):  # interleaved
        one, t = timed(lambda: generate(model, tok, texts, batch_size=1, **kwargs), device)
        t_one.append(t)
        batched, t = timed(lambda: generate(model, tok, texts, batch_size=batch, **kwargs), device)
        t_batch.append(t)
        assert batched == one, "batched generation differs from one prompt at a time"
    n_tokens = sum(len(tok(c).input_ids) for cs in one for c in cs)
    t1, tb = min(t_one), min(t_batch)
    print(f"  batch_size=1     : {t1:7.2f} s  ({n_tokens / t1:7.1f} generated tokens/s)")
    print(f"  batch_size={batch:<6}: {tb:7.2f} s  ({n_tokens / tb:7.1f} generated tokens/s)")
    print("  outputs identical: yes")
    print(f"  example: {texts[0]!r} -> {one[0][0]!r}")
    print()
    print(ratio_line("generation_speedup", t1 / tb, TARGET, at_most=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

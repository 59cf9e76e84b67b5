"""How stable are BOLD's disparity numbers at a given number of prompts, samples and tokens? One generation pass,
then every smaller setting read off it.

    python scripts/bold_stability.py --out runs/bold_stability --prompts-per-group 30 --samples 4 \
        --max-new-tokens 48 --prompts 4 8 15 30 --samples-grid 1 2 4 --tokens 32 48 --draws 10

Samples continuations of BOLD's profession prompts (`eval/bold_professions.yaml`, `max_per_group` prompts per
group) with a checkpoint (default the embedded teacher, in `--precision`, bf16 as a run on a CPU with native bf16
samples), unless `<out>/bold_professions_generations.jsonl` exists already. Then, for every setting of fewer
prompts per group (`--prompts`), fewer samples per prompt (`--samples-grid`) and shorter continuations (`--tokens`:
the first N tokens of each continuation, which is what sampling N tokens would have given, as each sequence draws
its own random numbers token by token), relabels the texts and computes the female share, mean and worst parity
with their 95% bootstrap intervals over prompts, averaged over `--draws` random choices of the prompts and samples
kept. Writes `<out>/bold_stability.md` and `.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def _generate(args: argparse.Namespace, out: Path) -> Path:
    import torch

    from distill.evaluation import runner
    from distill.evaluation import suites as S
    from distill.evaluation.registry import Context

    path = out / "bold_professions_generations.jsonl"
    if path.is_file():
        return path
    overrides = [
        f"max_per_group={args.prompts_per_group}",
        f"n_per_prompt={args.samples}",
        f"max_new_tokens={args.max_new_tokens}",
        "fluency=false",
    ]
    spec = S.load_suite("bold_professions", overrides)
    data = runner.prepare_tasks(spec)
    device = torch.device("cpu")
    lm = runner.load_model(runner.resolve_checkpoint(args.ckpt), device, role="model")
    ctx = Context(device, None, "fluency not asked for", None, "", precision=args.precision)
    runner.evaluate_model(lm, spec, data, ctx, out)
    return path


def _truncate(records: list[dict], tokens: list[int], ckpt: str) -> dict[int, list[str]]:
    """Each continuation cut to its first N tokens, for every N in `tokens`."""
    from distill.evaluation.runner import resolve_checkpoint
    from distill.models.loading import load_tokenizer

    tok = load_tokenizer(resolve_checkpoint(ckpt).path)
    ids = [tok(r["continuation"], add_special_tokens=False)["input_ids"] for r in records]
    return {n: [tok.decode(x[:n]) for x in ids] for n in tokens}


def _summaries(records, texts, p, s, draws, n_boot) -> dict:
    from distill.evaluation.polarity import classify_texts, disparity_summary

    labels_all = classify_texts(texts)
    by_prompt: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        by_prompt[r["group"]][r["prompt_index"]].append(i)
    keys = ("female_share", "parity_mean", "parity_min")
    values: dict[str, list[float]] = {k: [] for k in (*keys, *(f"{k}_width" for k in keys), "gendered")}
    for d in range(draws):
        rng = random.Random(f"{p}:{s}:{d}")
        labels, owners = defaultdict(list), defaultdict(list)
        for g, prompts in by_prompt.items():
            for k in rng.sample(sorted(prompts), min(p, len(prompts))):
                for i in rng.sample(prompts[k], min(s, len(prompts[k]))):
                    labels[g].append(labels_all[i])
                    owners[g].append(k)
        summary = disparity_summary(labels, n_boot=n_boot, seed=d, prompt_of=owners)
        for k in keys:
            values[k].append(summary[k])
            low, high = summary[f"{k}_ci"]
            values[f"{k}_width"].append(high - low)
        values["gendered"].append(summary["n_gendered"] / summary["n_texts"])
    return {k: float(np.nanmean(v)) for k, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the generations and the tables")
    ap.add_argument("--ckpt", default="embedded:smollm2-135m")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "no"])
    ap.add_argument("--prompts-per-group", type=int, default=8)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, nargs="+", default=[2, 4, 8], help="prompts per group to read off")
    ap.add_argument("--samples-grid", type=int, nargs="+", default=[1, 2, 5], help="samples per prompt")
    ap.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 48], help="continuation lengths")
    ap.add_argument("--draws", type=int, default=20, help="random subsets averaged per setting")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in _generate(args, out).read_text().splitlines() if line.strip()]
    cut = _truncate(records, args.tokens, args.ckpt)
    rows = []
    for n in args.tokens:
        for p in args.prompts:
            for s in args.samples_grid:
                row = {"tokens": n, "prompts_per_group": p, "samples": s, "continuations": 18 * p * s}
                row.update(_summaries(records, cut[n], p, s, args.draws, args.n_boot))
                rows.append(row)
    (out / "bold_stability.json").write_text(json.dumps(rows, indent=2))
    head = "| tokens | prompts / group | samples | continuations | gendered | female share (CI width) | parity mean (CI width) | parity worst (CI width) |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['prompts_per_group']} | {r['samples']} | {r['continuations']} | "
            f"{r['gendered']:.3f} | {r['female_share']:.3f} ({r['female_share_width']:.3f}) | "
            f"{r['parity_mean']:.3f} ({r['parity_mean_width']:.3f}) | {r['parity_min']:.3f} ({r['parity_min_width']:.3f}) |"
        )
    text = (
        f"BOLD profession prompts, {args.ckpt} ({args.precision}); means over {args.draws} random subsets of the "
        f"{len(records)} continuations; CI width: 95% bootstrap over prompts.\n\n" + "\n".join(lines) + "\n"
    )
    (out / "bold_stability.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

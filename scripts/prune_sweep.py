"""Students made by dropping teacher layers, before any training: which layers go, and what they keep.

    python scripts/prune_sweep.py recipes/smollm2-135m_to_24L.yaml --drop 2 6 10 --out runs/prune_sweep

For the recipe's transfer set (sampled and cached as in training), the teacher's layers are ranked once by the
recipe's `student.prune.by`; for each `--drop N` the student keeps the other layers. Teacher and each student
are scored on the run's validation blocks (perplexity) and on Winogender (association with BLS % women and with
the teacher's scores, spread, lean; all and unseen occupations). Writes `<out>/prune_sweep.json`, a markdown
table `<out>/prune_sweep.md` and the scatter plot `<out>/prune_sweep_winogender.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from distill.core.recipe import load_config
from distill.core.resources import resource_path
from distill.data.transfer import build_blocks, read_prompts
from distill.evaluation import stereotype as S
from distill.evaluation.metrics import winogender as W
from distill.evaluation.scoring import perplexity
from distill.models.loading import build_student, load_teacher
from distill.models.pruning import prune_layers


def _scores(model, tokenizer, prompts, stats, seen, teacher_scores, val) -> dict:
    r = W.winogender_eval(model, tokenizer, prompts, stats, teacher_scores, seen, n_boot=1000)
    r["ppl"] = perplexity(model, tokenizer, val, batch_size=8)["ppl"]
    return r


def _fmt(st: dict, key: str) -> str:
    v, ci = st.get(key), st.get(f"{key}_ci")
    if v is None:
        return "-"
    return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    ap.add_argument("--drop", type=int, nargs="+", default=[6], help="layers to drop, one student per value")
    ap.add_argument("--out", default="runs/prune_sweep")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.recipe, args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    teacher, tokenizer, _ = load_teacher(cfg)
    train_blocks, val_blocks = build_blocks(cfg, tokenizer, teacher=teacher)
    prompts, stats = W.load_templates(), S.load_occupation_stats()
    lines = read_prompts(resource_path(cfg.data.prompts))  # seen / unseen: the recipe's transfer prompts
    seen = S.occupations_seen({p.occupation for p in prompts}, lines)
    rows = {"teacher": _scores(teacher, tokenizer, prompts, stats, seen, None, val_blocks)}
    t_scores = rows["teacher"]["per_occupation"]
    pruned = {}
    for drop in args.drop:
        cfg.student.prune.drop = drop
        cfg.student.layers = None
        sel = prune_layers(cfg.student, teacher, train_blocks, cfg.data.cache_dir)
        student = build_student(cfg.student, teacher, seed=cfg.run.seed, layers=sel["layers"]).eval()
        with torch.no_grad():
            rows[f"drop {drop}"] = _scores(student, tokenizer, prompts, stats, seen, t_scores, val_blocks)
        pruned[f"drop {drop}"] = sel
        logging.info("drop %d: dropped %s", drop, sel["dropped"])

    header = "| model | layers | ppl (val blocks) | r BLS | r teacher | spread | lean | r BLS unseen | spread unseen |"
    md = [header, "|" + "---|" * 9]
    n_layers = teacher.config.num_hidden_layers
    for name, r in rows.items():
        depth = n_layers - int(name.split()[1]) if name.startswith("drop") else n_layers
        a, u = r["all"], r["unseen"]
        md.append(
            f"| {name} | {depth} | {r['ppl']:.1f} | {_fmt(a, 'r_bls')} | {_fmt(a, 'r_teacher')} | "
            f"{_fmt(a, 'spread')} | {_fmt(a, 'lean')} | {_fmt(u, 'r_bls')} | {_fmt(u, 'spread')} |"
        )
    md.append("")
    md.append(
        f"n = {rows['teacher']['all']['n']} occupations, {rows['teacher']['unseen']['n']} unseen in {cfg.data.prompts}; "
        f"validation blocks {tuple(val_blocks.shape)}; block influence on {pruned[next(iter(pruned))]['blocks']} tokens."
    )
    for name, sel in pruned.items():
        md.append(f"{name}: dropped teacher layers {sel['dropped']}")
    md.append(
        "block influence per teacher layer: " + " ".join(f"{i}:{v:.4f}" for i, v in enumerate(sel["scores"]))
    )
    text = "\n".join(md) + "\n"
    (out / "prune_sweep.md").write_text(text)
    slim = {k: {kk: vv for kk, vv in r.items() if kk != "per_prompt"} for k, r in rows.items()}
    (out / "prune_sweep.json").write_text(
        json.dumps({"rows": slim, "pruned": pruned, "recipe": args.recipe}, indent=1)
    )
    series = [(name, r["per_occupation"], r["all"]) for name, r in rows.items()]
    W.stereotype_plot(series, stats, out / "prune_sweep_winogender.png", seen=seen)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

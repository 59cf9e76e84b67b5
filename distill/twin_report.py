"""`distill inspect-twins RECIPE`: how well the counterfactual machinery covers a recipe's transfer set.

Prints coverage over the pair list and over the gendered word occurrences of the training blocks (how many get a
perturbed target at the position that decides their gender), the her/his rule's accuracy on
word_lists/her_rule_eval.tsv, the number of incoherent twins (a twin whose text is not `swap(decode(x))`: some
words swapped and others not) and a few real twins with their perturbed positions marked.
"""

from __future__ import annotations

import logging

from distill.config import Config

log = logging.getLogger(__name__)


def mark_perturbed(tokenizer, ids: list[int], twin, x_side: bool = True) -> str:
    """The text of x (or x~) with each gendered word whose deciding position is exchanged in [brackets]: the token
    predicted at an aligned position where x and x~ differ, or that a local first-piece exchange covers."""
    toks = ids if x_side else twin.ids
    align = twin.align
    marked = set()
    for i, j in enumerate(align):
        if j < 0 or i + 1 >= len(ids) or j + 1 >= len(twin.ids):
            continue
        if ids[i + 1] != twin.ids[j + 1] or twin.local[i] is not None:
            marked.add(i + 1 if x_side else j + 1)
    out = []
    for k, t in enumerate(toks):
        s = tokenizer.decode([t])
        out.append(f"[{s.lstrip()}]" if k in marked and s.strip() else s)
        if k in marked and s.startswith(" "):
            out[-1] = " " + out[-1]
    return "".join(out)


def inspect_twins(cfg: Config, n_show: int = 3) -> str:
    from distill.counterfactual import twin_batch
    from distill.data import build_blocks
    from distill.models import load_teacher, load_tokenizer, resolve_teacher_path
    from distill.swap import her_rule_accuracy
    from distill.twins import Counterfactuals

    teacher = None
    if cfg.data.source == "teacher_samples":
        teacher, tokenizer, _ = load_teacher(cfg)
    else:
        path = resolve_teacher_path(cfg.teacher, cfg.data.cache_dir)
        tokenizer = load_tokenizer(path, cfg.teacher.revision, cfg.teacher.trust_remote_code)
    # the transfer set a training run of this recipe uses: sampled (or read back) in the run's precision
    import torch

    from distill.precision import resolve_mixed_precision

    mp, _ = resolve_mixed_precision(cfg.train.mixed_precision, cuda=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mp == "bf16"):
        train_blocks, _ = build_blocks(cfg, tokenizer, teacher=teacher, device="cpu")
    del teacher
    cf = Counterfactuals(cfg, tokenizer)
    b = cf.builder
    st = b.stats
    words = covered = changed = incoherent = 0
    bad: list[str] = []
    shown: list[str] = []
    for start in range(0, train_blocks.shape[0], 64):
        x = train_blocks[start : start + 64]
        tb = twin_batch(b, x, cf.pad_id)
        words += int(tb["words"].sum())
        covered += int(tb["covered"].sum())
        changed += int(tb["changed"].sum())
        for r in range(x.shape[0]):
            ids = x[r].tolist()
            twin = b.build(ids)
            text = tokenizer.decode(ids)
            if tokenizer.decode(twin.ids) != cf.swapper.swap(text):
                incoherent += 1
                if len(bad) < 3:
                    bad.append(f"  block {start + r}: {text[:160]!r}")
            if twin.changed and len(shown) < n_show and twin.words >= 2:
                shown.append(
                    f"  block {start + r} ({twin.covered}/{twin.words} words perturbed)\n"
                    f"    x : {mark_perturbed(tokenizer, ids, twin)!r}\n"
                    f"    x~: {mark_perturbed(tokenizer, ids, twin, x_side=False)!r}"
                )
    n_pairs = st["pairs"]
    n_cov_pairs = st["pairs_single"] + st["pairs_tokens"] + st["pairs_first_diff"]
    correct, total, _ = her_rule_accuracy(cf.swapper)
    lines = [
        f"inspect-twins: {train_blocks.shape[0]} training blocks of {train_blocks.shape[1]} tokens, "
        f"{changed} with something to swap",
        f"gendered vocabulary G: {int(b.exchange.g_mask.sum())} tokens, +{int(b.exchange.extra.sum())} "
        "first-piece tokens",
        f"pair list: {n_cov_pairs}/{n_pairs} one-to-one pairs get a perturbed target "
        f"({100 * n_cov_pairs / max(1, n_pairs):.1f}%): {st['pairs_single']} single tokens, "
        f"{st['pairs_tokens']} token by token, {st['pairs_first_diff']} at their first differing piece",
        f"word groups: {'; '.join(st['groups']) or 'none'}",
        f"occurrences: {covered}/{words} gendered words in the training blocks get a perturbed target "
        f"({100 * covered / max(1, words):.1f}%)",
        f"her/his rule: {correct}/{total} ({100 * correct / max(1, total):.1f}%) on word_lists/her_rule_eval.tsv",
        f"incoherent twins (text != swap(decode(x))): {incoherent} of {train_blocks.shape[0]}",
        *bad,
        "twins ([word]: its deciding position is perturbed):",
        *shown,
    ]
    return "\n".join(lines)

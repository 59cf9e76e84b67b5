"""`distill inspect-twins RECIPE`: how well the counterfactual machinery covers a recipe's transfer set.

Prints coverage over the pair list and over the gendered word occurrences of the training blocks (how many get a
perturbed target at the position that decides their gender), the her/his rule's accuracy on
word_lists/her_rule_eval.tsv (and with `augment.her_decider: teacher` the teacher-decided accuracy, the held-out
sentences apart, and how the teacher's decisions on the transfer set differ from the rule's), the number of
incoherent twins (a twin whose text is not `swap(decode(x))`: some
words swapped and others not) and a few real twins with their perturbed positions marked.
"""

from __future__ import annotations

import logging

from distill.core.config import Config

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
    from distill.counterfactual.align import twin_batch
    from distill.counterfactual.twins import Counterfactuals
    from distill.data.transfer import build_blocks
    from distill.models.loading import load_teacher, load_tokenizer, resolve_teacher_path

    teacher = None
    decide = cfg.augment.her_decider == "teacher"
    if cfg.data.source == "teacher_samples" or decide:
        teacher, tokenizer, _ = load_teacher(cfg)
    else:
        from distill.models.remote_code import allow_remote_code

        allow_remote_code(cfg)
        path = resolve_teacher_path(cfg.teacher, cfg.data.cache_dir)
        tokenizer = load_tokenizer(path, cfg.teacher.revision, cfg.teacher.trust_remote_code)
    # the transfer set a training run of this recipe uses: sampled (or read back) in the run's precision
    import torch

    from distill.core.precision import resolve_mixed_precision

    mp, _ = resolve_mixed_precision(cfg.train.mixed_precision, cuda=False)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=mp == "bf16")

    with autocast():
        train_blocks, _ = build_blocks(
            cfg, tokenizer, teacher=teacher if cfg.data.source == "teacher_samples" else None, device="cpu"
        )
    cf = Counterfactuals(cfg, tokenizer)
    her_lines = _her_lines(cfg, cf, teacher, train_blocks, autocast)
    del teacher
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
            if tokenizer.decode(twin.ids) != cf.swapper.swap(text, _text_decisions(b, tokenizer, ids)):
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
        *her_lines,
        f"incoherent twins (text != swap(decode(x))): {incoherent} of {train_blocks.shape[0]}",
        *bad,
        "twins ([word]: its deciding position is perturbed):",
        *shown,
    ]
    return "\n".join(lines)


def _pct(c: int, t: int) -> str:
    return f"{c}/{t} ({100 * c / max(1, t):.1f}%)"


def _her_lines(cfg: Config, cf, teacher, train_blocks, autocast) -> list[str]:
    """The her/his lines of the report: the rule's accuracy on word_lists/her_rule_eval.tsv; with
    `augment.her_decider: teacher`, the teacher-decided accuracy (the sentences before the held-out marker and
    the held-out ones apart) and the decisions on the transfer set (made here, or read from their cache)."""
    from distill.counterfactual import her_decide
    from distill.counterfactual.swap import her_rule_accuracy

    correct, total, _ = her_rule_accuracy(cf.swapper)
    lines = [f"her/his rule: {_pct(correct, total)} on word_lists/her_rule_eval.tsv"]
    if cfg.augment.her_decider != "teacher":
        return lines
    stats = her_decide.prepare(cf, cfg, teacher, train_blocks, autocast)
    scorer = her_decide.LMScorer(teacher, cf.builder.tokenizer, autocast=autocast)
    acc = her_decide.accuracy(cf.swapper, scorer, her_decide.MODE)
    old, held = acc["old"], acc["held_out"]
    lines.append(
        f"her/his decided by the teacher ({her_decide.MODE}): {_pct(old[0], old[1])} on the first sentences, "
        f"{_pct(held[0], held[1])} on the held-out ones, {_pct(*acc['all'][:2])} in all"
    )
    lines += [f"  miss: {m}" for m in acc["all"][2]]
    lines.append(
        f"her/his on the transfer set: {stats['scored']} of {stats['occurrences']} decided by the teacher, "
        f"{stats['changed']} differ from the rule ({stats['seconds']:.1f} s to decide)"
    )
    lines += [f"  {e}" for e in stats["examples"]]
    return lines


def _text_decisions(builder, tokenizer, ids: list[int]) -> dict[int, str] | None:
    """The builder's decided counterparts of a block as character offsets of `tokenizer.decode(ids)`, for the
    text swapper (so the coherence check compares like with like)."""
    from distill.counterfactual.align import block_key

    if not builder.decisions:
        return None
    per = builder.decisions.get(block_key(ids))
    if not per:
        return None
    out = {}
    for tok, word in per.items():
        lead = 1 if builder.strings[ids[tok]].startswith(" ") else 0
        out[len(tokenizer.decode(ids[:tok])) + lead] = word
    return out

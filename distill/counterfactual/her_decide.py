"""Teacher-decided her/his counterparts (`augment.her_decider: teacher`).

`her` becomes `his` or `him`, `his` becomes `her` or `hers`; the swapper's rule (`distill.counterfactual.swap.noun_follows`)
decides from the next word and misses an object followed by its complement ("made her happy", "sent her
flowers") and a standalone `his` before a verb ("a cousin of his lives"). Here a causal LM decides instead: for an
occurrence, both candidate twins of a window around it are written out (every gendered word of the window swapped
as the twin swaps it, the occurrence once with each counterpart) and scored, and the likelier one is kept.

The score of a candidate window is the sum of the log-probabilities the LM gives its tokens, each given the
tokens before it in the window, the first given the tokenizer's BOS token (EOS where there is none). The window
is the text from `WINDOW_LEFT` characters before the word to `WINDOW_RIGHT` characters after it, widened to whole
words; both candidates share the text before the word, so the score compares the word and what follows it. A
tie keeps the rule's choice.

Which occurrences are decided (`mode`): `fallback` (the default) scores only those the rule decides by its
fallback step (`default` in `distill.counterfactual.swap.RULE_BRANCHES`: a word outside its lists follows, "taken to be a
noun"), where all of its known misses are; `all` scores every her/his. `word_lists/README.md` reports both.

For training, the decisions are made once per transfer set with the teacher (`prepare`), cached as JSON under
`data.cache_dir/her_decisions/`, and handed to the token-level twin builder
(`CounterfactualBuilder.decisions`): per block (keyed by a digest of its token ids) a map {token index of the
word: counterpart}. The twin table's and the teacher cache's keys take in the decisions' own key (`key_part`), so
twins of `rule` and `teacher` runs are never mixed up.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.core.errors import FairDistillError
from distill.core.resources import resource_path
from distill.counterfactual.align import block_key
from distill.counterfactual.swap import Swapper, rule_branch

log = logging.getLogger(__name__)

MODES = ("fallback", "all")
"""Which occurrences the LM decides: those of the rule's fallback step, or all."""
MODE = "fallback"
"""The mode training uses (chosen by accuracy on word_lists/her_rule_eval.tsv; see word_lists/README.md)."""
WINDOW_LEFT = 160
WINDOW_RIGHT = 80
"""Characters of context before and after the word in a scored window (widened to whole words)."""
VERSION = 1
"""Bumped when the scoring rule changes, so cached decisions are rebuilt."""

_WORD = re.compile(r"\w+")

Scorer = Callable[[list[str]], list[float]]
"""Texts -> one score each (higher: likelier)."""


def key_part(cfg, builder=None) -> list:
    """What the twin table's and the teacher cache's keys add for the recipe's decider: nothing for `rule`
    (today's keys); for `teacher`, the key of the decisions `prepare` handed to `builder` (a digest of what they
    were made from: blocks, word lists, tokenizer, teacher, precision, scoring rule)."""
    d = getattr(cfg.augment, "her_decider", "rule")
    if d == "rule" or (cfg.augment.mode == "off" and cfg.perturb.kind == "none"):
        return []  # the rule's keys; a run without counterfactuals builds its cached twins by the rule
    key = getattr(builder, "decisions_key", None)
    if key is None:
        raise FairDistillError(
            "augment.her_decider: teacher, but the teacher's her/his decisions were not made for these twins "
            "(distill.counterfactual.her_decide.prepare runs before the twins are built)"
        )
    return [f"her_decider:{d}:{key}"]


@dataclass(frozen=True)
class Occurrence:
    """One her/his in a text: characters [start, end), the rule's counterpart and step, the other candidate."""

    start: int
    end: int
    word: str
    rule: str
    other: str
    branch: str


def occurrences(swapper: Swapper, text: str) -> list[Occurrence]:
    """The one-to-many words of `text` with two distinct counterparts (her, his), as the text swapper reads them
    (the rule sees `distill.counterfactual.swap`'s 64 characters of context on either side)."""
    out = []
    for m in _WORD.finditer(text):
        rule = swapper.rule_for(m.group())
        if rule is None or rule.before_noun == rule.otherwise:
            continue
        following, preceding = text[m.end() : m.end() + 64], text[max(0, m.start() - 64) : m.start()]
        noun, branch = rule_branch(following, preceding)
        chosen = rule.counterpart(noun)
        other = rule.otherwise if noun else rule.before_noun
        out.append(Occurrence(m.start(), m.end(), m.group(), chosen, other, branch))
    return out


def window(text: str, start: int, end: int) -> tuple[int, int]:
    """The [lo, hi) character range scored around the word at [start, end): `WINDOW_LEFT` / `WINDOW_RIGHT`
    characters on either side, widened to whole words (never past the text)."""
    lo, hi = max(0, start - WINDOW_LEFT), min(len(text), end + WINDOW_RIGHT)
    while lo > 0 and text[lo - 1].isalnum():
        lo -= 1
    while hi < len(text) and text[hi].isalnum():
        hi += 1
    return lo, hi


def candidates(swapper: Swapper, text: str, occ: Occurrence) -> tuple[str, str]:
    """The two candidate twin windows of `occ`: (with the rule's counterpart, with the other one). Every other
    gendered word of the window is swapped as the swapper swaps it."""
    lo, hi = window(text, occ.start, occ.end)
    piece = text[lo:hi]
    return (
        swapper.swap(piece, {occ.start - lo: occ.rule}),
        swapper.swap(piece, {occ.start - lo: occ.other}),
    )


def decide_text(
    swapper: Swapper, text: str, scorer: Scorer, mode: str = MODE
) -> dict[int, tuple[Occurrence, str]]:
    """{character offset: (occurrence, chosen counterpart)} for every her/his of `text` that `mode` hands to the
    scorer."""
    return decide_many(swapper, [text], scorer, mode)[0]


def decide_many(
    swapper: Swapper, texts: Sequence[str], scorer: Scorer, mode: str = MODE
) -> list[dict[int, tuple[Occurrence, str]]]:
    """`decide_text` over many texts, scoring all their candidates in one call to `scorer`."""
    if mode not in MODES:
        raise ValueError(f"her/his decision mode must be one of {', '.join(MODES)}, got {mode!r}")
    todo: list[tuple[int, Occurrence]] = []
    windows: list[str] = []
    for i, text in enumerate(texts):
        for occ in occurrences(swapper, text):
            if mode == "fallback" and occ.branch != "default":
                continue
            todo.append((i, occ))
            windows.extend(candidates(swapper, text, occ))
    scores = scorer(windows) if windows else []
    out: list[dict[int, tuple[Occurrence, str]]] = [{} for _ in texts]
    for k, (i, occ) in enumerate(todo):
        keep, alt = scores[2 * k], scores[2 * k + 1]
        out[i][occ.start] = (occ, occ.other if alt > keep else occ.rule)
    return out


class LMScorer:
    """Sum of token log-probabilities of texts under any Hugging Face causal LM (`model(input_ids,
    attention_mask).logits`), each text preceded by the tokenizer's BOS token (EOS where there is none), in
    batches of `batch_size`, inside `autocast` (a context factory; e.g. bf16 autocast on a CPU)."""

    def __init__(self, model, tokenizer, batch_size: int = 16, autocast=None, device=None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.autocast = autocast
        self.device = device if device is not None else next(model.parameters()).device
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise FairDistillError(
                f"{type(tokenizer).__name__} has neither a BOS nor an EOS token to start a scored text with; "
                "set augment.her_decider: rule"
            )
        self.start = start
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> list[float]:
        import contextlib

        rows = [[self.start] + self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
        out = [0.0] * len(rows)
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            T = max(len(rows[i]) for i in idx)
            ids = torch.full((len(idx), T), self.pad, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(rows[i])] = torch.tensor(rows[i])
                mask[r, : len(rows[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            with self.autocast() if self.autocast is not None else contextlib.nullcontext():
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            tok = logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
            for r, i in enumerate(idx):
                out[i] = float(tok[r].sum())
            if (b // self.batch_size + 1) % 50 == 0:
                log.info("her/his decisions: %d / %d candidate windows scored", b + len(idx), len(rows))
        return out


# --------------------------------------------------------------------------------------------------------------
# Accuracy on word_lists/her_rule_eval.tsv

HELD_OUT_MARKER = "# --- held out"
"""The comment line of her_rule_eval.tsv after which the sentences are the held-out set."""


def eval_items(path: str = "word_lists/her_rule_eval.tsv") -> list[tuple[str, list[str], bool]]:
    """(sentence, expected counterparts in order, held out?) of each line of the eval file."""
    items, held = [], False
    for line in resource_path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(HELD_OUT_MARKER):
            held = True
        if not line.strip() or line.startswith("#"):
            continue
        sentence, expected = line.split("\t")
        items.append((sentence, expected.split(","), held))
    return items


def accuracy(
    swapper: Swapper,
    scorer: Scorer | None,
    mode: str = MODE,
    path: str = "word_lists/her_rule_eval.tsv",
) -> dict[str, tuple[int, int, list[str]]]:
    """{"old": ..., "held_out": ..., "all": ...}: (correct, total, misses) of the her/his decisions on the eval
    file, by the rule alone (`scorer` None) or with the scorer deciding the occurrences `mode` hands it."""
    items = eval_items(path)
    sentences = [s for s, _, _ in items]
    decided = decide_many(swapper, sentences, scorer, mode) if scorer is not None else [{} for _ in items]
    res = {k: [0, 0, []] for k in ("old", "held_out", "all")}
    for (sentence, wanted, held), dec in zip(items, decided):
        occs = occurrences(swapper, sentence)
        if len(occs) != len(wanted):
            raise FairDistillError(
                f"{path}: {len(occs)} her/his but {len(wanted)} expected counterparts: {sentence!r}"
            )
        for occ, want in zip(occs, wanted):
            got = dec[occ.start][1] if occ.start in dec else occ.rule
            for k in ("held_out" if held else "old", "all"):
                res[k][1] += 1
                if got == want:
                    res[k][0] += 1
                else:
                    res[k][2].append(f"{sentence!r}: {occ.word!r} -> {got!r}, expected {want!r}")
    return {k: (c, t, m) for k, (c, t, m) in res.items()}


# --------------------------------------------------------------------------------------------------------------
# The transfer set: decisions per block, for the token-level twin builder


def block_occurrences(builder, ids: list[int]) -> list[tuple[int, int]]:
    """(token index, character offset in the block's text) of each her/his the builder would swap in a block;
    the text is the block's token strings joined (`block_text`)."""
    offsets, pos = [], 0
    for t in ids:
        offsets.append(pos)
        pos += len(builder.strings[t])
    out = []
    for start, end, clean in builder.words(ids):
        if not clean:
            continue
        word = "".join(builder._body[t] for t in ids[start:end])
        rule = builder.swapper.rule_for(word)
        if rule is None or rule.before_noun == rule.otherwise:
            continue
        out.append((start, offsets[start] + len(builder._lead[ids[start]])))
    return out


def block_text(builder, ids: list[int]) -> str:
    return "".join(builder.strings[t] for t in ids)


def decide_blocks(builder, blocks: torch.Tensor, scorer: Scorer, mode: str = MODE) -> tuple[dict, dict]:
    """The decisions for the token-level twins of `blocks` [N, T]: ({block key: {token index: counterpart}},
    stats). Each block is read as its text; a word is decided in that text as `decide_many` decides it, and the
    decision is kept only where the builder would swap the same word (its token span is a clean word)."""
    texts, occs = [], []
    for row in blocks.tolist():
        found = block_occurrences(builder, row)
        if found:
            texts.append((row, block_text(builder, row)))
            occs.append(found)
    t0 = time.perf_counter()
    decided = decide_many(builder.swapper, [t for _, t in texts], scorer, mode)
    seconds = time.perf_counter() - t0
    table: dict[str, dict[int, str]] = {}
    n_words = n_scored = n_changed = 0
    examples: list[str] = []
    for (row, text), found, dec in zip(texts, occs, decided):
        n_words += len(found)
        per: dict[int, str] = {}
        for tok, char in found:
            if char not in dec:
                continue
            occ, chosen = dec[char]
            per[tok] = chosen
            n_scored += 1
            if chosen != occ.rule:
                n_changed += 1
                if len(examples) < 8:
                    lo, hi = max(0, occ.start - 40), min(len(text), occ.end + 30)
                    examples.append(f"{text[lo:hi]!r}: {occ.word} -> {chosen} (rule: {occ.rule})")
        if per:
            table[block_key(row)] = per
    stats = {
        "mode": mode,
        "blocks": int(blocks.shape[0]),
        "occurrences": n_words,
        "scored": n_scored,
        "changed": n_changed,
        "seconds": round(seconds, 2),
        "examples": examples,
    }
    return table, stats


def prepare(cf, cfg, teacher, blocks: torch.Tensor, autocast=None) -> dict | None:
    """Hand the teacher's decisions for `blocks` to `cf.builder` (`augment.her_decider: teacher`), made once
    and cached under `data.cache_dir/her_decisions/` by content (blocks, word lists, tokenizer, teacher, the
    precision `autocast` runs in, the scoring rule). Returns the decisions' stats; None for `rule`."""
    if getattr(cfg.augment, "her_decider", "rule") != "teacher":
        return None
    from distill.core.files import (
        atomic_write,
        digest,
        model_fingerprint,
        tensor_digest,
        tokenizer_fingerprint,
    )
    from distill.core.precision import active_autocast_dtype

    builder = cf.builder
    device = next(teacher.parameters()).device
    if autocast is not None:
        with autocast():
            amp = active_autocast_dtype(device)
    else:
        amp = None
    a = cfg.augment
    words = [
        resource_path(f).read_text(encoding="utf-8") if f else None for f in (a.pairs, a.one_to_many, a.names)
    ]
    key = digest(
        [
            "her-decisions",
            VERSION,
            MODE,
            WINDOW_LEFT,
            WINDOW_RIGHT,
            tensor_digest(blocks),
            list(blocks.shape),
            words,
            tokenizer_fingerprint(builder.tokenizer),
            model_fingerprint(teacher),
            str(amp),
        ]
    )
    path = Path(cfg.data.cache_dir) / "her_decisions" / f"{key}.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        log.info("her/his decisions: reusing %s", path)
    else:
        scorer = LMScorer(teacher, builder.tokenizer, autocast=autocast, device=device)
        table, stats = decide_blocks(builder, blocks, scorer, MODE)
        data = {"stats": stats, "decisions": table}
        atomic_write(path, json.dumps(data))
        log.info(
            "her/his decisions by the teacher (%s): %d of %d occurrences scored, %d differ from the rule, "
            "%.1f s; cached %s",
            stats["mode"],
            stats["scored"],
            stats["occurrences"],
            stats["changed"],
            stats["seconds"],
            path,
        )
    builder.decisions = {k: {int(t): w for t, w in v.items()} for k, v in data["decisions"].items()}
    builder.decisions_key = key
    return data["stats"]

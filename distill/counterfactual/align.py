"""Aligned counterfactual pairs on token ids, and the exchange (G, pi, word groups) the perturbation applies.

The twin x~ is built from the tokens of x: words are read off the token strings, each gendered word's tokens are
replaced by the counterpart's tokens (same leading space and case, decided by `Swapper.swap_word`), everything else
is copied. Because ` nephew` may be one token and ` niece` two, x~ can be longer or shorter than x; `align[i]` gives
the position of x~ whose next-token prediction corresponds to position i of x, or -1 where there is none:

    x   :  The  nurse  said   he    told  his   nephew   .
    x~  :  The  nurse  said   she   told  her   n  iece  .
    align: 0    1      2*     3     4*    5*    6        7      (* the next tokens are exchanged: he/she, his/her,
                                                                  nephew/n at the first piece that differs)

A changed word gets a perturbed target at the position(s) that decide its gender:

- both words correspond token for token (` he`/` she`, ` step`+`father`/` step`+`mother`): every position
  predicting one of its pieces is aligned, and the pieces are exchanged there by pi or a word group;
- otherwise the positions predicting the shared first pieces are aligned (the same token follows in both), and so
  is the position predicting the first piece where the two differ (` nephew` against ` n`; ` wait`+`er` against
  ` wait`+`ress`: `er` against `ress`); those two tokens are exchanged at that position only (`local`: one extra
  transposition per position, over a fixed set of columns known from the word lists). Positions predicting the
  remaining pieces are -1;
- the last token of a changed word aligns to the last token of its counterpart (both predict the same next token);
- every other position aligns to its shifted copy.

Block edges are text edges: a word at the start or the end of a block is swapped as it reads, so a twin is the
swapped text of its block (`swap(decode(x))`), coherent in gender. A word whose letters run into digits, an
underscore or a token shared with punctuation is left alone, as the text swapper leaves `he2` alone.

Per position the twin also carries the perturbation's position-aware switches (`distill.counterfactual.perturb`): `wordstart`
(a token of G without a leading space is a word only where the tokenizer's pre-tokenizer starts a new word: ` pant`
+ `her` is not `her`) and `keep` (where the next token of the text continues a word of G, ` Man` + `ning`, that
token's pair or group is left alone). The twin row's switches are x's, carried over by the alignment, so the two
rows mirror each other exactly.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from dataclasses import dataclass, field

import torch

from distill.counterfactual.exchange import gendered_exchange
from distill.counterfactual.swap import case_like
from distill.counterfactual.tokens import is_word_char, token_strings, word_can_start_after

log = logging.getLogger(__name__)


@dataclass
class Twin:
    """One row's twin. ids: x~ token ids (any length); align: [len(x)] into x~ or -1; changed: anything swapped.

    wordstart / keep: the position-aware switches of x's positions (see the module docstring), and of x~'s
    (`twin_wordstart`, `twin_keep`, [len(ids)]). local / twin_local: per position an extra exchanged token pair
    (a, b) or None. words / covered: how many gendered words the row has and how many get a perturbed target.
    """

    ids: list[int]
    align: list[int]
    changed: bool
    wordstart: list[bool] = field(default_factory=list)
    keep: list[int] = field(default_factory=list)
    twin_wordstart: list[bool] = field(default_factory=list)
    twin_keep: list[int] = field(default_factory=list)
    local: list[tuple[int, int] | None] = field(default_factory=list)
    twin_local: list[tuple[int, int] | None] = field(default_factory=list)
    words: int = 0
    covered: int = 0


def _split_lead(s: str) -> tuple[str, str]:
    return (" ", s[1:]) if s.startswith(" ") else ("", s)


def deciding_piece(old: list[int], new: list[int], partners: dict[int, set[int]]) -> tuple[str, int]:
    """How the two token spellings of a swapped pair correspond: ("tokens", n) token for token through the
    exchange; ("first_diff", c) the first c pieces equal and piece c differs in both; ("none", c) one is a prefix
    of the other (no position decides the gender)."""
    if len(old) == len(new) and all(a == b or b in partners.get(a, ()) for a, b in zip(old, new)):
        return "tokens", len(old)
    c = 0
    while c < min(len(old), len(new)) and old[c] == new[c]:
        c += 1
    if c < min(len(old), len(new)):
        return "first_diff", c
    return "none", c


def block_key(ids: list[int]) -> str:
    """The digest a block's decided counterparts are filed under (its token ids)."""
    return hashlib.blake2b(array("q", ids).tobytes(), digest_size=12).hexdigest()


class CounterfactualBuilder:
    """Builds twins of token rows with a word-level `Swapper` (see distill.counterfactual.swap)."""

    def __init__(
        self,
        tokenizer,
        swapper,
        word_pairs: list[tuple[str, str]],
        word_groups: list[tuple[tuple[str, ...], tuple[str, ...]]] = (),
    ):
        self.tokenizer = tokenizer
        self.swapper = swapper
        self.strings = token_strings(tokenizer)
        # Per token: leading space, body, body all letters, body all word characters, first / last char is one
        self._lead, self._body, self._alpha, self._wall, self._wstart, self._wend = [], [], [], [], [], []
        for s in self.strings:
            lead, body = _split_lead(s)
            self._lead.append(lead)
            self._body.append(body)
            self._alpha.append(bool(body) and body.isalpha())
            self._wall.append(bool(body) and all(is_word_char(c) for c in body))
            self._wstart.append(bool(body) and is_word_char(body[0]))
            self._wend.append(bool(body) and is_word_char(body[-1]))
        self._starts_after = word_can_start_after(tokenizer, self.strings)
        self._encode_cache: dict[str, list[int]] = {}
        self.decisions: dict[str, dict[int, str]] | None = None
        """Counterparts decided elsewhere (`distill.counterfactual.her_decide.prepare`): {block key: {token index: word}}."""
        self.decisions_key: str | None = None
        """The digest of what `decisions` were made from (it enters the twin table's and teacher cache's keys)."""
        self.exchange, self.stats = gendered_exchange(tokenizer, word_pairs, word_groups, self.strings)
        self.pi = self.exchange.pi
        self.partners: dict[int, set[int]] = {}
        fam = self.exchange.family()
        for t in self.exchange.g_mask.nonzero(as_tuple=True)[0].tolist():
            self.partners[t] = {int(v) for v in fam[t]} - {t}
        # The local transpositions multi-token pairs need (their first differing pieces), in every surface form
        extra = torch.zeros_like(self.exchange.g_mask)
        n_tokens = n_first = 0
        for a, b in word_pairs:
            kinds = set()
            for fa, fb in ((a, b), (a.capitalize(), b.capitalize()), (a.upper(), b.upper())):
                for lead in ("", " "):
                    old, new = self._encode(lead + fa), self._encode(lead + fb)
                    how, c = deciding_piece(old, new, self.partners)
                    if how == "first_diff" and not (
                        len(old) == len(new) == 1 and self.exchange.g_mask[old[0]]
                    ):
                        extra[old[c]] = extra[new[c]] = True
                    if lead == " " and fa == a:
                        kinds.add("single" if len(old) == len(new) == 1 and how == "tokens" else how)
            n_tokens += "tokens" in kinds and "single" not in kinds
            n_first += "first_diff" in kinds and not kinds & {"single", "tokens"}
        self.exchange.extra = extra & ~self.exchange.g_mask
        # G: the columns the exchange moves at every position (the teacher cache keeps them exactly); the local
        # pieces move only at the few positions that decide a multi-token word
        self.g_mask = self.exchange.g_mask
        n_single = self.stats["pairs_single"]
        self.stats.update(pairs_tokens=n_tokens, pairs_first_diff=n_first)
        n = self.stats["pairs"]
        log.info(
            "gendered vocabulary G: %d tokens (+%d first-piece tokens); one-to-one pairs with a perturbed target: "
            "%d/%d (%.0f%%): %d single tokens, %d token by token, %d at their first differing piece; word groups: %s",
            int(self.exchange.g_mask.sum()),
            int(self.exchange.extra.sum()),
            n_single + n_tokens + n_first,
            n,
            100 * (n_single + n_tokens + n_first) / max(1, n),
            n_single,
            n_tokens,
            n_first,
            ", ".join(self.stats["groups"]) or "none",
        )

    def _encode(self, text: str) -> list[int]:
        ids = self._encode_cache.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self._encode_cache[text] = ids
        return ids

    def words(self, ids: list[int]) -> list[tuple[int, int, bool]]:
        """Maximal runs of word characters as (start, end, swappable) token spans [start, end); swappable when
        the run is letters only and made of whole tokens (the text swapper's `\\w+` runs, on tokens)."""
        spans: list[tuple[int, int, bool]] = []
        start, clean = -1, True
        for i, t in enumerate(ids):
            if start >= 0 and not self._lead[t] and self._wstart[t]:  # the run goes on into this token
                if self._alpha[t]:
                    continue
                if self._wall[t]:  # digits or underscores: `he2` is one word, not `he`
                    clean = False
                    continue
                spans.append((start, i, False))  # the run ends inside this token (glued to punctuation)
                start = -1
                if self._wend[t]:
                    start, clean = i, False
                continue
            if start >= 0:
                spans.append((start, i, clean))
                start = -1
            if self._alpha[t]:
                start, clean = i, True
            elif self._wend[t]:
                start, clean = i, False
        if start >= 0:
            spans.append((start, len(ids), clean))  # the block's end is the text's end
        return spans

    def _continues(self, a: int, b: int) -> bool:
        """Does token b, right after a, continue a's word?"""
        return not self._lead[b] and self._wstart[b] and self._wend[a] and not self._starts_after[a]

    def _counterpart(
        self, ids: list[int], start: int, end: int, decided: dict
    ) -> tuple[bool, str, int] | None:
        """The word ids[start:end]'s counterpart: None when it is not a gendered word; else (its own counterpart?,
        the replacement text, where the replaced span ends: past a possessive suffix that changes with it)."""
        word = "".join(self._body[t] for t in ids[start:end])
        following = "".join(self.strings[t] for t in ids[end : end + 3])
        # the words before, for the her/his decision ("according to her will"), as the text swapper sees them
        preceding = "".join(self.strings[t] for t in ids[max(0, start - 16) : start])
        repl = self.swapper.swap_word(word, following, preceding)
        if start in decided and repl is not None:
            repl = case_like(word, decided[start])
        if repl is None:
            return None
        if repl == word:
            return True, repl, end
        suffix_old, suffix_new = self.swapper.possessive(word, repl, following)
        if (
            suffix_old != suffix_new
        ):  # "ladies' room" -> "gentlemen's room": the possessive is part of the swap
            k, acc = end, ""
            while k < len(ids) and len(acc) < len(suffix_old):
                acc += self.strings[ids[k]]
                k += 1
            if acc == suffix_old:
                end, repl = k, repl + suffix_new
        return False, repl, end

    def build(self, ids: list[int] | torch.Tensor) -> Twin:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        n = len(ids)
        out: list[int] = []
        align = [-1] * n
        wordstart = [self._starts_after[t] for t in ids]
        g = self.g_mask
        keep = [
            ids[i + 1] if i + 2 < n and g[ids[i + 1]] and self._continues(ids[i + 1], ids[i + 2]) else -1
            for i in range(n)
        ]
        local: list[tuple[int, int] | None] = [None] * n
        twin_local_at: dict[int, tuple[int, int]] = {}
        pos = 0
        changed = False
        n_words = n_covered = 0
        decided = self.decisions.get(block_key(ids), {}) if self.decisions else {}
        for start, end, clean in self.words(ids):
            found = self._counterpart(ids, start, end, decided) if clean else None
            if found is None:
                continue
            same, repl, end = found
            # counted where a position predicts the word (not the block's first token, which nothing predicts)
            n_words += start > 0
            if same:
                n_covered += start > 0
                continue
            new = self._encode(self._lead[ids[start]] + repl)
            for i in range(pos, start):
                align[i] = len(out)
                out.append(ids[i])
            old = ids[start:end]
            base = len(out) - 1  # twin position predicting the counterpart's first piece
            how, c = deciding_piece(old, new, self.partners)
            if start > 0:
                align[
                    start - 1
                ] = -1  # set below if the position predicting the word's first piece has a match
            if how == "tokens":
                for k in range(len(old)):
                    if start - 1 + k >= 0:
                        align[start - 1 + k] = base + k
                        wordstart[start - 1 + k] = wordstart[start - 1 + k] or k > 0
                n_covered += start > 0
            else:
                for k in range(c):  # positions predicting the shared first pieces: the same token follows
                    if start - 1 + k >= 0:
                        align[start - 1 + k] = base + k
                        wordstart[start - 1 + k] = wordstart[start - 1 + k] or k > 0
                i = start - 1 + c  # the position predicting the first piece that differs
                a, b = (old[c], new[c]) if how == "first_diff" else (-1, -1)
                if i >= 0 and a >= 0 and self.exchange.extra[a] and self.exchange.extra[b]:
                    align[i] = base + c
                    wordstart[i] = wordstart[i] or c > 0
                    local[i] = (a, b)
                    twin_local_at[base + c] = (b, a)
                    n_covered += 1
                elif i >= 0:
                    align[i] = -1
            out.extend(new)
            align[end - 1] = len(out) - 1
            pos = end
            changed = True
        for i in range(pos, n):
            align[i] = len(out)
            out.append(ids[i])
        inv = invert_alignment(align, len(out))
        twin_ws = [wordstart[i] if i >= 0 else self._starts_after[t] for i, t in zip(inv, out)]
        twin_keep = [keep[i] if i >= 0 else -1 for i in inv]
        twin_local = [twin_local_at.get(j) for j in range(len(out))]
        return Twin(
            out, align, changed, wordstart, keep, twin_ws, twin_keep, local, twin_local, n_words, n_covered
        )


def pad_rows(rows: list[list[int]], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or cut) rows to `length`: ids [B, length], attention_mask [B, length]."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        row = row[:length]
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, : len(row)] = 1
    return ids, mask


def invert_alignment(align: list[int], twin_len: int) -> list[int]:
    inv = [-1] * twin_len
    for i, j in enumerate(align):
        if 0 <= j < twin_len:
            inv[j] = i
    return inv


def twin_batch(builder: CounterfactualBuilder, x: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """The twins of rows x [B, T], as tensors: twin_ids/twin_mask [B, T]; align/align_inv [B, T] (-1: none);
    changed [B] bool; wordstart/twin_wordstart [B, T] bool, keep/twin_keep [B, T] long, pair/twin_pair [B, T, 2]
    long (the position-aware switches of x's and x~'s positions, `distill.counterfactual.perturb`); words/covered [B] long (the
    row's gendered words that a position predicts, i.e. all but one at the block's first token, and those of them
    with a perturbed target)."""
    B, T = x.shape
    built = [builder.build(row) for row in x]
    ids, mask = pad_rows([t.ids for t in built], T, pad_id)

    def cut(rows: list[list], fill) -> list[list]:
        return [(list(r) + [fill] * T)[:T] for r in rows]

    def pairs(rows: list[list]) -> torch.Tensor:
        return torch.tensor(cut([[p if p is not None else (-1, -1) for p in r] for r in rows], (-1, -1)))

    align = torch.tensor([[j if j < T else -1 for j in t.align] for t in built], dtype=torch.long)
    inv = torch.tensor(cut([invert_alignment(t.align, len(t.ids)) for t in built], -1), dtype=torch.long)
    return {
        "twin_ids": ids,
        "twin_mask": mask,
        "align": align,
        "align_inv": inv,
        "changed": torch.tensor([t.changed for t in built], dtype=torch.bool),
        "wordstart": torch.tensor([t.wordstart for t in built], dtype=torch.bool),
        "keep": torch.tensor([t.keep for t in built], dtype=torch.long),
        "pair": pairs([t.local for t in built]),
        "twin_wordstart": torch.tensor(cut([t.twin_wordstart for t in built], True), dtype=torch.bool),
        "twin_keep": torch.tensor(cut([t.twin_keep for t in built], -1), dtype=torch.long),
        "twin_pair": pairs([t.twin_local for t in built]),
        "words": torch.tensor([t.words for t in built], dtype=torch.long),
        "covered": torch.tensor([t.covered for t in built], dtype=torch.long),
    }

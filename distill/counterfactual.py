"""Aligned counterfactual pairs on token ids, and the gendered vocabulary G with its involution pi.

The twin x~ is built from the tokens of x: words are read off the token strings, each gendered word's tokens are
replaced by the counterpart's tokens (same leading space and case, decided by `Swapper.swap_word`), everything else
is copied. Because ` nephew` may be one token and ` niece` two, x~ can be longer or shorter than x; `align[i]` gives
the position of x~ whose next-token prediction corresponds to position i of x, or -1 where there is none:

    x   :  The  nurse  said   he    told  his   nephew   .
    x~  :  The  nurse  said   she   told  her   n  iece  .
    align: 0    1      2*     3     4*    5     6        7      (* the next tokens are a swapped pair: he/she)

- position i before a changed word (predicting the word's first token): aligned only if both words are single
  tokens and form a pair in G, so the two next tokens are a swapped pair; otherwise -1;
- positions inside a changed word (predicting its remaining pieces): -1;
- the last token of a changed word aligns to the last token of its counterpart (both predict the same next token);
- every other position aligns to its shifted copy.

A word cut by a block boundary, or sharing a token with punctuation or another word, is left alone (it cannot be
swapped without changing tokens that are not its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from distill.errors import WordListError

log = logging.getLogger(__name__)

_SPACE_MARKERS = ("Ġ", "▁")


def token_strings(tokenizer) -> list[str]:
    """Surface text of every token id, with its leading space (byte-level and sentencepiece vocabularies)."""
    vocab_size = len(tokenizer)
    toks = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    out = []
    for t in toks:
        if t is None:
            out.append("")
            continue
        s = tokenizer.convert_tokens_to_string([t])
        if t.startswith(_SPACE_MARKERS) and not s.startswith(" "):
            s = " " + s
        out.append(s)
    return out


@dataclass
class Twin:
    """One row's twin. ids: x~ token ids (any length); align: [len(x)] into x~ or -1; changed: anything swapped."""

    ids: list[int]
    align: list[int]
    changed: bool


def _split_lead(s: str) -> tuple[str, str]:
    return (" ", s[1:]) if s.startswith(" ") else ("", s)


class CounterfactualBuilder:
    """Builds twins of token rows with a word-level `Swapper` (see distill.swap)."""

    def __init__(self, tokenizer, swapper, word_pairs: list[tuple[str, str]]):
        self.tokenizer = tokenizer
        self.swapper = swapper
        self.strings = token_strings(tokenizer)
        # Per token: (leading space, body, body is all letters, body starts/ends with a letter)
        self._lead = []
        self._body = []
        self._alpha = []
        for s in self.strings:
            lead, body = _split_lead(s)
            self._lead.append(lead)
            self._body.append(body)
            self._alpha.append(bool(body) and body.isalpha())
        self._encode_cache: dict[str, list[int]] = {}
        self.pi, self.g_mask, self.g_pairs = gendered_vocabulary(tokenizer, word_pairs, self.strings)

    def _encode(self, text: str) -> list[int]:
        ids = self._encode_cache.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self._encode_cache[text] = ids
        return ids

    def words(self, ids: list[int]) -> list[tuple[int, int, bool]]:
        """Maximal letter runs as (start, end, swappable) token spans [start, end)."""
        spans: list[tuple[int, int, bool]] = []
        start, clean = -1, True
        n = len(ids)
        for i, t in enumerate(ids):
            body, alpha, lead = self._body[t], self._alpha[t], self._lead[t]
            continues = start >= 0 and not lead and body[:1].isalpha()
            if alpha:
                if continues:
                    continue
                if start >= 0:
                    spans.append((start, i, clean))
                # A word at position 0 without a leading space may be the tail of a word cut by packing ("her"
                # of "father"); a capitalised one ("She") is taken as a word start.
                start, clean = i, not (i == 0 and not lead and not body[:1].isupper())
                continue
            # A mixed token (letters glued to punctuation, or a partial byte) ends the current word; if it
            # continues the word, the word is not ours to swap.
            if start >= 0:
                spans.append((start, i, clean and not continues))
                start = -1
            if body[-1:].isalpha():
                start, clean = i, False
        if start >= 0:
            spans.append((start, n, False))  # may continue past the block's end
        return spans

    def build(self, ids: list[int] | torch.Tensor) -> Twin:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        out: list[int] = []
        align = [-1] * len(ids)
        pos = 0
        changed = False
        words = [w for w in self.words(ids) if w[2]]
        for start, end, _ in words:
            word = "".join(self._body[t] for t in ids[start:end])
            following = "".join(self.strings[t] for t in ids[end : end + 3])
            repl = self.swapper.swap_word(word, following)
            if repl is None or repl == word:
                continue
            new = self._encode(self._lead[ids[start]] + repl)
            # copy up to the word
            for i in range(pos, start):
                align[i] = len(out)
                out.append(ids[i])
            old = ids[start:end]
            if start > 0:
                ok = len(old) == 1 and len(new) == 1 and int(self.pi[old[0]]) == new[0]
                align[start - 1] = len(out) - 1 if ok else -1
            out.extend(new)
            align[end - 1] = len(out) - 1
            pos = end
            changed = True
        for i in range(pos, len(ids)):
            align[i] = len(out)
            out.append(ids[i])
        return Twin(ids=out, align=align, changed=changed)


def gendered_vocabulary(tokenizer, word_pairs: list[tuple[str, str]], strings: list[str] | None = None):
    """G and pi from gendered word pairs (lowercase, male/female) and the tokenizer.

    A token is in G when it is a whole gendered word (any of lower / Title / UPPER case, with or without a
    leading space) and its counterpart in the same form is a single token too. Returns (pi [V] long, g_mask [V]
    bool, pairs) and logs how much of the pair list G covers.
    """
    strings = strings if strings is not None else token_strings(tokenizer)
    index: dict[str, int] = {}
    for i, s in enumerate(strings):
        index.setdefault(s, i)
    V = len(strings)
    pi = torch.arange(V)
    pairs: list[tuple[int, int]] = []
    covered = 0
    for a, b in word_pairs:
        hit = False
        for fa, fb in ((a, b), (a.capitalize(), b.capitalize()), (a.upper(), b.upper())):
            for lead in ("", " "):
                ia, ib = index.get(lead + fa), index.get(lead + fb)
                if ia is None or ib is None or ia == ib:
                    continue
                if int(pi[ia]) != ia or int(pi[ib]) != ib:
                    continue  # a token already paired (first listed pair wins)
                pi[ia], pi[ib] = ib, ia
                pairs.append((ia, ib))
                hit = True
        covered += hit
    g_mask = pi != torch.arange(V)
    if not pairs:
        raise WordListError(
            f"none of the {len(word_pairs)} gendered word pairs is a single token pair in this tokenizer's vocabulary "
            f"({V} tokens); check augment.pairs, or that the tokenizer matches the teacher"
        )
    log.info(
        "gendered vocabulary G: %d tokens from %d/%d word pairs (%.0f%%)",
        int(g_mask.sum()),
        covered,
        len(word_pairs),
        100 * covered / max(1, len(word_pairs)),
    )
    return pi, g_mask, pairs


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


def g_word_pairs(lexicon, use_names: bool = False) -> list[tuple[str, str]]:
    """(male, female) word pairs whose single-token forms make up G.

    One-to-one pairs (and names when used) are involutions already. Of the one-to-many words only the possessive
    determiners his/her enter G (the commonest use); him and hers have no single counterpart, so pi leaves them
    alone (the twin still swaps them in text, by the one-to-many rule).
    """
    pairs = list(lexicon.pairs) + (list(lexicon.names) if use_names else [])
    for rule in lexicon.one_to_many:
        if rule.gender == "female":
            pair = (rule.before_noun, rule.word)
            if pair not in pairs:
                pairs.append(pair)
    return pairs

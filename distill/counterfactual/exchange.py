"""The exchange pi over the gendered tokens G: which token of the vocabulary stands for which in the twin (one-to-one
pairs, and her/his-style word groups whose mass is shared), built from the word lists and a tokenizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.core.errors import WordListError
from distill.counterfactual.tokens import token_strings


def gendered_vocabulary(tokenizer, word_pairs: list[tuple[str, str]], strings: list[str] | None = None):
    """G and pi of the one-to-one pairs: (pi [V] long, g_mask [V] bool, token pairs). See `gendered_exchange`."""
    ex, stats = gendered_exchange(tokenizer, word_pairs, (), strings)
    return ex.pi, ex.g_mask, stats["token_pairs"]


def gendered_exchange(
    tokenizer,
    word_pairs: list[tuple[str, str]],
    word_groups=(),
    strings: list[str] | None = None,
) -> tuple[Exchange, dict]:
    """The exchange from gendered word pairs (lowercase, male/female), word groups (female words, male words) and
    the tokenizer.

    A token is in G when it is a whole gendered word (any of lower / Title / UPPER case, with or without a
    leading space) and its counterpart in the same form is a single token too (pairs), or when the word belongs to a
    group that has a single-token word on both sides in that form. Returns the `Exchange` and coverage counts.
    """
    strings = strings if strings is not None else token_strings(tokenizer)
    index: dict[str, int] = {}
    for i, s in enumerate(strings):
        index.setdefault(s, i)
    V = len(strings)
    pi = torch.arange(V)
    used = torch.zeros(V, dtype=torch.bool)
    pairs: list[tuple[int, int]] = []
    single = 0
    for a, b in word_pairs:
        hit = False
        for fa, fb in ((a, b), (a.capitalize(), b.capitalize()), (a.upper(), b.upper())):
            for lead in ("", " "):
                ia, ib = index.get(lead + fa), index.get(lead + fb)
                if ia is None or ib is None or ia == ib or used[ia] or used[ib]:
                    continue  # not single tokens, or a token already paired (first listed pair wins)
                pi[ia], pi[ib] = ib, ia
                used[ia] = used[ib] = True
                pairs.append((ia, ib))
                hit = hit or (lead == " " and fa == a)
        single += hit
    fams: list[tuple[list[int], list[int]]] = []
    group_names = []
    for female, male in word_groups:
        forms = 0
        for case in (str.lower, str.capitalize, str.upper):
            for lead in ("", " "):
                f = [index[lead + case(w)] for w in female if lead + case(w) in index]
                m = [index[lead + case(w)] for w in male if lead + case(w) in index]
                f = [t for t in dict.fromkeys(f) if not used[t]]
                m = [t for t in dict.fromkeys(m) if not used[t] and t not in f]
                if f and m:
                    used[f] = used[m] = True
                    fams.append((f, m))
                    forms += 1
        if forms:
            group_names.append(f"{'/'.join(female)} <-> {'/'.join(male)} in {forms} surface forms")
    W = max([max(len(f), len(m)) for f, m in fams], default=0)
    groups = torch.full((len(fams), 2, W), -1, dtype=torch.long)
    for k, (f, m) in enumerate(fams):
        groups[k, 0, : len(f)] = torch.tensor(f)
        groups[k, 1, : len(m)] = torch.tensor(m)
    if not pairs and not fams:
        raise WordListError(
            f"none of the {len(word_pairs)} gendered word pairs is a single token pair in this tokenizer's vocabulary "
            f"({V} tokens); check augment.pairs, or that the tokenizer matches the teacher"
        )
    bare = torch.tensor([not s.startswith(" ") for s in strings]) & used
    ex = Exchange(pi=pi, groups=groups, bare=bare, g_mask=used.clone())
    stats = {"pairs": len(word_pairs), "pairs_single": single, "groups": group_names, "token_pairs": pairs}
    return ex, stats


def g_word_pairs(lexicon, use_names: bool = False) -> list[tuple[str, str]]:
    """(male, female) one-to-one word pairs whose tokens make up G's pairs (names too when used). The one-to-many
    words, and a pair that shares a word with them (mr/mrs, with ms and miss -> mr), are exchanged as groups
    (`g_word_groups`), not pairs."""
    grouped = {w for f, m in g_word_groups(lexicon) for w in f + m}
    pairs = list(lexicon.pairs) + (list(lexicon.names) if use_names else [])
    return [(a, b) for a, b in pairs if a not in grouped and b not in grouped]


def g_word_groups(lexicon) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The one-to-many words as exchange groups: (female words, male words) of each connected set of rules
    (her -> his | him, his -> her | hers, ...: {her, hers} against {his, him})."""
    parent: dict[str, str] = {}

    def find(w: str) -> str:
        while parent.setdefault(w, w) != w:
            w = parent[w]
        return w

    gender: dict[str, str] = {}
    for rule in lexicon.one_to_many:
        gender[rule.word] = rule.gender
        for other in (rule.before_noun, rule.otherwise):
            gender.setdefault(other, "female" if rule.gender == "male" else "male")
            parent[find(rule.word)] = find(other)
    for (
        male,
        female,
    ) in lexicon.pairs:  # a pair that shares a word with a group joins it (mr/mrs with ms -> mr)
        if male in gender or female in gender:
            gender[male], gender[female] = "male", "female"
            parent[find(male)] = find(female)
    comps: dict[str, list[str]] = {}
    for w in gender:
        comps.setdefault(find(w), []).append(w)
    out = []
    for words in comps.values():
        words = sorted(words)
        out.append(
            (tuple(w for w in words if gender[w] == "female"), tuple(w for w in words if gender[w] == "male"))
        )
    return out


@dataclass
class Exchange:
    """How the role-reversed distribution is mapped back onto x's vocabulary, sparse over G.

    pi [V] long: involution of the one-to-one pairs (identity elsewhere, and on group words). groups [K, 2, W]
    long: per group family (one surface form: lead space and case), its female and male tokens, -1 padded.
    bare [V] bool: tokens of G with no leading space, exchanged only at word starts. g_mask [V] bool: G, the
    columns of pairs and groups (where `max` and `expmean` act).
    """

    pi: torch.Tensor
    groups: torch.Tensor
    bare: torch.Tensor
    g_mask: torch.Tensor
    extra: torch.Tensor | None = None
    """[V] bool, outside G: the first differing pieces of multi-token pairs (` n` of ` n`+`iece` against
    ` nephew`), exchanged only at the positions a twin names (`local`)."""

    @classmethod
    def from_pi(cls, pi: torch.Tensor) -> Exchange:
        """Pairs only, every token exchanged at every position (the plain involution)."""
        V = pi.shape[0]
        g = pi != torch.arange(V, device=pi.device)
        return cls(pi, torch.empty(0, 2, 0, dtype=torch.long), torch.zeros(V, dtype=torch.bool), g)

    def to(self, device) -> Exchange:
        extra = None if self.extra is None else self.extra.to(device)
        return Exchange(*(t.to(device) for t in (self.pi, self.groups, self.bare, self.g_mask)), extra)

    def cols(self) -> torch.Tensor:
        """[n] the columns of G, ascending: all the dense part of the exchange touches."""
        return self.g_mask.nonzero(as_tuple=True)[0]

    def family(self) -> torch.Tensor:
        """[V, F] for each token, the tokens exchanged with it (its pair, or its whole group), padded with itself;
        `keep` switches a whole family off at a position."""
        V = self.pi.shape[0]
        K, _, W = self.groups.shape
        width = max(2, 2 * W)
        fam = torch.arange(V, device=self.pi.device).unsqueeze(1).repeat(1, width)
        fam[:, 1] = self.pi
        for k in range(K):
            members = self.groups[k].reshape(-1)
            members = members[members >= 0]
            row = torch.cat([members, members[:1].expand(width - members.numel())])
            fam[members] = row
        return fam


def as_exchange(pi: torch.Tensor | Exchange) -> Exchange:
    return pi if isinstance(pi, Exchange) else Exchange.from_pi(pi)


def _log_share(logp_g: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """log(p(v) / p(group)) for the group's local columns `loc`; an all-zero group splits evenly."""
    part = logp_g[..., loc]
    total = torch.logsumexp(part, dim=-1, keepdim=True)
    even = torch.full_like(part, -math.log(loc.numel()))
    return torch.where(torch.isfinite(total), part - total, even)


def exchange_g(
    raw: torch.Tensor,
    own: torch.Tensor,
    ex: Exchange,
    local: dict,
    wordstart: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The exchange restricted to G's columns. raw: the other world's log-probs there [..., n]; own: this world's
    (the split inside a group); wordstart [...] bool; keep [...] long token or -1. Returns [..., n]."""
    new = raw[..., local["pi"]]
    for f_loc, m_loc in local["groups"]:
        f_mass = torch.logsumexp(raw[..., f_loc], dim=-1, keepdim=True)
        m_mass = torch.logsumexp(raw[..., m_loc], dim=-1, keepdim=True)
        new[..., f_loc] = m_mass + _log_share(own, f_loc)
        new[..., m_loc] = f_mass + _log_share(own, m_loc)
    if wordstart is not None and local["bare"].numel():
        b = local["bare"]
        new[..., b] = torch.where(wordstart.unsqueeze(-1), new[..., b], raw[..., b])
    if keep is not None:
        hit = keep >= 0
        if hit.any():
            fam = local["family"][keep[hit]]  # [m, F] local columns, -1 outside G
            rows = new[hit]
            src = raw[hit]
            ok = fam >= 0
            idx = fam.clamp(min=0)
            rows.scatter_(1, idx, torch.where(ok, src.gather(1, idx), rows.gather(1, idx)))
            new[hit] = rows
    return new


def transpose_pairs(r: torch.Tensor, pair: torch.Tensor) -> None:
    """In place: at each position with pair [..., 2] >= 0, exchange r's two columns (a local transposition of a
    multi-token pair's first differing pieces, outside G). Touches only those positions."""
    hit = pair[..., 0] >= 0
    if hit.any():
        rows, ab = r[hit], pair[hit]
        rows.scatter_(1, ab, rows.gather(1, ab.flip(1)))
        r[hit] = rows


def local_index(ex: Exchange) -> dict:
    """G-local versions of the exchange's index tensors (positions within `ex.cols()`)."""
    cols = ex.cols()
    V = ex.pi.shape[0]
    to_local = torch.full((V,), -1, dtype=torch.long, device=cols.device)
    to_local[cols] = torch.arange(cols.numel(), device=cols.device)
    groups = []
    for k in range(ex.groups.shape[0]):
        f, m = ex.groups[k, 0], ex.groups[k, 1]
        groups.append((to_local[f[f >= 0]], to_local[m[m >= 0]]))
    return {
        "cols": cols,
        "to_local": to_local,
        "pi": to_local[ex.pi[cols]],
        "groups": groups,
        "bare": to_local[ex.bare.nonzero(as_tuple=True)[0]],
        "family": to_local[ex.family()],
    }


_LOCAL_CACHE: dict[int, tuple[Exchange, dict]] = {}


def cached_local_index(ex: Exchange) -> dict:
    """`local_index(ex)`, computed once per exchange object."""
    hit = _LOCAL_CACHE.get(id(ex))
    if hit is None or hit[0] is not ex:
        if len(_LOCAL_CACHE) > 16:
            _LOCAL_CACHE.clear()
        hit = (ex, local_index(ex))
        _LOCAL_CACHE[id(ex)] = hit
    return hit[1]

"""Load and validate the gendered word lists in `word_lists/` (pairs, one-to-many rules, names, professions).

Every list is checked when it is loaded, so a malformed line fails at start-up with `file:line`, what is wrong
and the fix, instead of silently producing a counterfactual that is not one. The formats are documented in the
header of each file and in `word_lists/README.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from distill.core.errors import WordListError
from distill.core.resources import resource_path

__all__ = [
    "GENDERS",
    "GenderLexicon",
    "OneToMany",
    "load_lexicon",
    "load_professions",
]

GENDERS: tuple[str, ...] = ("male", "female")
"""Allowed values of the `gender` column of gender_one_to_many.tsv."""

# Letters a-z only: the swapper matches runs of letters, so a word with a hyphen or apostrophe could never match.
# Compounds are swapped through their parts (father-in-law -> mother-in-law, king's -> queen's).
_WORD = re.compile(r"[a-z]+")
# Professions are filled into a template, so multi-word ones ("construction worker") are fine.
_PROFESSION = re.compile(r"[a-z]+(?: [a-z]+)*")

_PAIR_COLUMNS = "male<TAB>female"
_ONE_TO_MANY_COLUMNS = "word<TAB>gender<TAB>before_noun<TAB>otherwise"


@dataclass(frozen=True)
class OneToMany:
    """A gendered word with two possible counterparts, chosen from the word that follows it.

    `before_noun` is used when the next word looks like the start of a noun phrase (the word is a possessive
    determiner: "her book" -> "his book"); `otherwise` when it is punctuation, the end of the text or a non-noun
    word ("told her that" -> "told him that", "it is his." -> "it is hers.").
    """

    word: str
    """The gendered word, lowercase."""
    gender: Literal["male", "female"]
    """Which side of the lexicon `word` is on."""
    before_noun: str
    """Counterpart when a noun phrase follows (possessive determiner use)."""
    otherwise: str
    """Counterpart in every other position (object or standalone pronoun)."""

    def counterpart(self, noun_follows: bool) -> str:
        """The counterpart for the position the rule decided on."""
        return self.before_noun if noun_follows else self.otherwise


@dataclass(frozen=True)
class GenderLexicon:
    """All gendered words the swapper knows: one-to-one pairs, one-to-many rules and optional first names."""

    pairs: tuple[tuple[str, str], ...]
    """One-to-one (male, female) pairs, lowercase, in file order; no word occurs twice."""
    one_to_many: tuple[OneToMany, ...]
    """Words with two counterparts (her, his, him, hers) and their rule; may be empty."""
    names: tuple[tuple[str, str], ...] = ()
    """(male, female) first-name pairs, lowercase; empty unless a names file was loaded."""

    def male_words(self) -> frozenset[str]:
        """Male-side words of the pairs and the one-to-many rows (he, him, his, king, ...); names excluded."""
        return frozenset(m for m, _ in self.pairs) | {r.word for r in self.one_to_many if r.gender == "male"}

    def female_words(self) -> frozenset[str]:
        """Female-side words of the pairs and the one-to-many rows (she, her, hers, queen, ...); names excluded."""
        return frozenset(f for _, f in self.pairs) | {
            r.word for r in self.one_to_many if r.gender == "female"
        }


# --- reading ------------------------------------------------------------------------------------------------------


def _read_rows(path: str | Path, what: str) -> tuple[str, list[tuple[int, str]]]:
    """Return (display name, [(line number, line)]) for the non-blank, non-comment lines of a list file.

    The display name is the path as the caller wrote it, which is what the user will recognise in a message.
    """
    shown = str(path)
    resolved = resource_path(path)
    if not resolved.is_file():
        where = "" if str(resolved) == shown else f" (resolved to {resolved})"
        raise WordListError(
            f"{shown}: {what} file not found{where}; give an absolute path, or one relative to the working "
            "directory or the checkout (the shipped lists are under word_lists/)"
        )
    try:
        text = resolved.read_text(encoding="utf-8-sig")  # a BOM is an editor's mark, not a word
    except UnicodeDecodeError as e:
        raise WordListError(
            f"{shown}: not valid UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8"
        ) from e
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        # Trailing spaces are an editor artefact, not data; a trailing tab is stripped too and then shows up as a
        # missing column, which is the right complaint.
        line = raw.rstrip()
        if line and not line.lstrip().startswith("#"):
            rows.append((number, line))
    return shown, rows


def _columns(shown: str, number: int, line: str, expected: int, layout: str) -> list[str]:
    """Split a line on tabs and insist on exactly `expected` columns."""
    cols = line.split("\t")
    if len(cols) != expected:
        hint = " (the words look separated by spaces: use one tab)" if len(cols) == 1 and " " in line else ""
        raise WordListError(
            f"{shown}:{number}: expected {expected} tab-separated columns ({layout}), got {len(cols)}: "
            f"{line!r}{hint}; write one entry per line as {layout}"
        )
    return cols


def _check_word(shown: str, number: int, word: str) -> str:
    """A word must be non-empty lowercase letters a-z."""
    if not word:
        raise WordListError(f"{shown}:{number}: empty column; every column needs a word")
    if not _WORD.fullmatch(word):
        fix = f"write it as {word.lower()!r}" if _WORD.fullmatch(word.lower()) else "use letters a-z only"
        raise WordListError(
            f"{shown}:{number}: {word!r} is not a lowercase word of letters a-z; {fix} (the swapper keeps the "
            "case of the text, and swaps hyphenated or possessive forms through their parts)"
        )
    return word


class _Registry:
    """Remembers where each word was defined, across files, so that no word gets two counterparts."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int, str]] = {}  # word -> (file, line, how it was defined)

    def add(self, shown: str, number: int, word: str, defined_as: str) -> None:
        """Record `word`; `defined_as` completes "'word' is already ..." in the message for a later repeat."""
        first = self._seen.get(word)
        if first is None:
            self._seen[word] = (shown, number, defined_as)
            return
        file, line, earlier = first
        where = f"line {line}" if file == shown else f"{file}:{line}"
        raise WordListError(
            f"{shown}:{number}: {word!r} is already {earlier} ({where}); a word may have only one "
            f"entry, so delete one of them. If {word!r} really has several counterparts, it is one-to-many: one-to-many "
            "words go in gender_one_to_many.tsv with their rule"
        )


def _load_pairs(path: str | Path, what: str, registry: _Registry) -> tuple[tuple[str, str], ...]:
    """Read a male<TAB>female file (gender pairs or names)."""
    shown, rows = _read_rows(path, what)
    if not rows:
        raise WordListError(
            f"{shown}: no pairs found (the file is empty or all comments); list at least one pair as {_PAIR_COLUMNS}"
        )
    pairs: list[tuple[str, str]] = []
    first_line: dict[frozenset[str], int] = {}
    for number, line in rows:
        male, female = (
            _check_word(shown, number, w) for w in _columns(shown, number, line, 2, _PAIR_COLUMNS)
        )
        if male == female:
            raise WordListError(
                f"{shown}:{number}: {male!r} is paired with itself; a pair needs a male and a different female "
                "word (leave gender-neutral words out of the list)"
            )
        key = frozenset((male, female))
        if key in first_line:
            raise WordListError(
                f"{shown}:{number}: duplicate pair {male!r}/{female!r} (first on line {first_line[key]}); "
                "delete this line"
            )
        first_line[key] = number
        registry.add(shown, number, male, f"paired with {female!r}")
        registry.add(shown, number, female, f"paired with {male!r}")
        pairs.append((male, female))
    return tuple(pairs)


def _load_one_to_many(
    path: str | Path, registry: _Registry, pairs: tuple[tuple[str, str], ...]
) -> tuple[OneToMany, ...]:
    """Read word<TAB>gender<TAB>before_noun<TAB>otherwise rows and check their counterparts exist."""
    shown, rows = _read_rows(path, "one-to-many word list")
    if not rows:
        raise WordListError(
            f"{shown}: no rows found (the file is empty or all comments); list rows as {_ONE_TO_MANY_COLUMNS}, "
            "or set one_to_many to null to leave her/his/him/hers unswapped"
        )
    parsed: list[tuple[int, OneToMany]] = []
    for number, line in rows:
        word, gender, before_noun, otherwise = _columns(shown, number, line, 4, _ONE_TO_MANY_COLUMNS)
        _check_word(shown, number, word)
        if gender not in GENDERS:
            raise WordListError(
                f"{shown}:{number}: gender must be one of {', '.join(GENDERS)}, got {gender!r}; the second column "
                f"says which side {word!r} is on"
            )
        for counterpart in (before_noun, otherwise):
            _check_word(shown, number, counterpart)
            if counterpart == word:
                raise WordListError(
                    f"{shown}:{number}: {word!r} lists itself as a counterpart; a counterpart is a word of the "
                    "other gender"
                )
        registry.add(shown, number, word, f"a one-to-many word (-> {before_noun!r} or {otherwise!r})")
        parsed.append(
            (number, OneToMany(word, cast(Literal["male", "female"], gender), before_noun, otherwise))
        )

    # A counterpart must itself be a known word of the other gender, so that a typo ("hiss") cannot slip in and
    # the swapped text stays inside the lexicon (what G and pi in the design are built from).
    side = {"male": {m for m, _ in pairs}, "female": {f for _, f in pairs}}
    for _, row in parsed:
        side[row.gender].add(row.word)
    for number, row in parsed:
        other = "female" if row.gender == "male" else "male"
        for counterpart in (row.before_noun, row.otherwise):
            if counterpart not in side[other]:
                raise WordListError(
                    f"{shown}:{number}: counterpart {counterpart!r} of {row.word!r} is not a {other} word of this "
                    "file or the pair file; fix the spelling or add the word"
                )
    return tuple(row for _, row in parsed)


# --- public API ---------------------------------------------------------------------------------------------------


def load_lexicon(
    pairs: str | Path = "word_lists/gender_pairs.tsv",
    one_to_many: str | Path | None = "word_lists/gender_one_to_many.tsv",
    names: str | Path | None = None,
) -> GenderLexicon:
    """Load and validate the gendered lexicon.

    Paths are resolved with `distill.core.resources.resource_path` (as given, else in the checkout, else in the
    installed wheel). `one_to_many=None` leaves her/his/him/hers unswapped; `names=None` loads no names.
    Raises `WordListError` with `file:line` for any malformed line, and when a word appears in two entries,
    within a file or across the three files.
    """
    registry = _Registry()
    pair_rows = _load_pairs(pairs, "gender pair list", registry)
    rules = () if one_to_many is None else _load_one_to_many(one_to_many, registry, pair_rows)
    name_rows = () if names is None else _load_pairs(names, "name pair list", registry)
    return GenderLexicon(pairs=pair_rows, one_to_many=rules, names=name_rows)


def load_professions(path: str | Path = "word_lists/professions.txt") -> list[str]:
    """Profession nouns for the pronoun probe, in file order.

    One per line, lowercase words of letters separated by single spaces; `#` comments and blank lines skipped.
    Raises `WordListError` for an empty file, a malformed line or a duplicate.
    """
    shown, rows = _read_rows(path, "profession list")
    if not rows:
        raise WordListError(f"{shown}: no professions found; list one lowercase profession noun per line")
    seen: dict[str, int] = {}
    for number, line in rows:
        if not _PROFESSION.fullmatch(line):
            raise WordListError(
                f"{shown}:{number}: {line!r} is not a lowercase profession of letters a-z (single spaces between "
                "words); write one profession per line, e.g. 'nurse' or 'construction worker'"
            )
        if line in seen:
            raise WordListError(
                f"{shown}:{number}: duplicate profession {line!r} (first on line {seen[line]}); delete this line"
            )
        seen[line] = number
    return list(seen)

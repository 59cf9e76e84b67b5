"""Text no recipe may train on: BOLD's Wikipedia sentences (`eval/data/bold/*_wiki.json`), the sources of BOLD's
prompts and of the real-text perplexity set, BOLD's prompts themselves, and the check that refuses a transfer set
containing any of them.

A transfer text contains a sentence when the sentence's words, lower-cased, appear in it in order and next to each
other (punctuation and spacing are ignored, so a re-typeset copy is found too). Sentences of fewer than
`MIN_WORDS` words ("He was born in 1950.") are not checked: they occur anywhere. A prompt line (`data.prompts`) is
also refused when it begins with one of BOLD's prompts of at least `MIN_WORDS` words: the teacher's continuation of
it would teach the student the answer to an evaluation prompt.

`distill check` and `distill train` run the check on `data.files` and `data.prompts` (`transfer.preflight`). A hub
dataset (`data.source: hf`) is not scanned: millions of web documents are too many to read in one process before
training, and a web corpus may quote Wikipedia anywhere, so a model trained on one is not held out from this text.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import DataError
from distill.core.resources import resource_path

BOLD_DIR = "eval/data/bold"
WIKI_FILES = ("profession_wiki.json", "gender_wiki.json")
PROMPT_FILES = ("profession_prompt.json", "gender_prompt.json")
MIN_WORDS = 6
_WORD = re.compile(r"\w+")


def words(text: str) -> tuple[str, ...]:
    """The lower-cased word sequence a containment check compares (runs of letters and digits)."""
    return tuple(_WORD.findall(text.lower()))


def read_bold_json(path: str | Path) -> list[str]:
    """Every string of a BOLD file (`{group: {name: [text, ...]}}`), stripped, in file order."""
    p = resource_path(path)
    if not p.is_file():
        raise DataError(f"{path}: BOLD file not found; expected one of eval/data/bold/*_wiki.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(f"{p}: expected BOLD's format {{group: {{name: [sentence, ...]}}}}")
    out: list[str] = []
    for group, names in data.items():
        for name, texts in names.items():
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise DataError(f"{p}: group {group!r}, name {name!r}: expected a list of strings")
            out.extend(t.strip() for t in texts if t.strip())
    return out


def wiki_paths(path: str | Path = BOLD_DIR) -> list[Path]:
    """BOLD Wikipedia files: a `*_wiki.json` file, or a folder's `*_wiki.json` files (profession first)."""
    p = resource_path(path)
    if p.is_file():
        return [p]
    found = [p / f for f in WIKI_FILES if (p / f).is_file()]
    found += sorted(f for f in p.glob("*_wiki.json") if f not in found) if p.is_dir() else []
    if not found:
        raise DataError(f"{path}: no BOLD Wikipedia file (*_wiki.json) there; expected {BOLD_DIR}")
    return found


def wiki_sentences(path: str | Path = BOLD_DIR) -> list[str]:
    """The Wikipedia sentences of BOLD's files, each once (first occurrence kept), in file order."""
    return list(dict.fromkeys(s for f in wiki_paths(path) for s in read_bold_json(f)))


def sample_sentences(sentences: Sequence[str], n: int | None, seed: int) -> list[str]:
    """A seeded random `n` of `sentences`, kept in their order. The sample is the first `n` of one seeded
    permutation, so a smaller sample is part of every larger one with the same seed."""
    if n is None or n >= len(sentences):
        return list(sentences)
    if n < 1:
        raise DataError(f"a sample must hold at least 1 sentence, got {n}")
    order = list(range(len(sentences)))
    random.Random(f"heldout:{seed}").shuffle(order)  # a str seed hashes the same in every process
    return [sentences[i] for i in sorted(order[:n])]


@dataclass(frozen=True)
class Found:
    """A held-out sentence found in a transfer text."""

    sentence: str
    source: str
    """The BOLD file it comes from."""


class HeldoutIndex:
    """Finds held-out word sequences in a text in one pass over its words (indexed by their first `MIN_WORDS`)."""

    def __init__(self, contained: Iterable[tuple[str, str]], prefixes: Iterable[tuple[str, str]] = ()):
        self._contained = self._index(contained)
        self._prefixes = self._index(prefixes)

    @staticmethod
    def _index(
        items: Iterable[tuple[str, str]],
    ) -> dict[tuple[str, ...], list[tuple[tuple[str, ...], Found]]]:
        index: dict[tuple[str, ...], list[tuple[tuple[str, ...], Found]]] = {}
        for text, source in items:
            w = words(text)
            if len(w) >= MIN_WORDS:
                index.setdefault(w[:MIN_WORDS], []).append((w, Found(text, source)))
        return index

    def find(self, text: str) -> Found | None:
        """The first held-out sentence `text` contains, else None."""
        w = words(text)
        for i in range(len(w) - MIN_WORDS + 1):
            for sentence, found in self._contained.get(w[i : i + MIN_WORDS], ()):
                if w[i : i + len(sentence)] == sentence:
                    return found
        return None

    def find_prompt(self, line: str) -> Found | None:
        """A held-out sentence in a prompt line, or the BOLD prompt the line begins with, else None."""
        w = words(line)
        for prompt, found in self._prefixes.get(w[:MIN_WORDS], ()):
            if w[: len(prompt)] == prompt:
                return found
        return self.find(line)

    def __len__(self) -> int:
        return sum(len(v) for v in self._contained.values())


@functools.lru_cache(maxsize=2)
def heldout_index(folder: str = BOLD_DIR) -> HeldoutIndex:
    """The index of every shipped BOLD Wikipedia sentence and prompt (built once per process)."""
    base = resource_path(folder)
    contained = [(s, f"{folder}/{p.name}") for p in wiki_paths(base) for s in read_bold_json(p)]
    prompts = [
        (s, f"{folder}/{name}")
        for name in PROMPT_FILES
        if (base / name).is_file()
        for s in read_bold_json(base / name)
    ]
    return HeldoutIndex(contained, prompts)


def _refusal(where: str, found: Found, setting: str) -> DataError:
    what = found.sentence if len(found.sentence) <= 90 else found.sentence[:87] + "..."
    return DataError(
        f"{where} contains held-out text: {what!r} ({found.source}). BOLD's Wikipedia sentences and prompts are "
        f"the source of its evaluation prompts and of the real-text perplexity set, so no transfer set may hold "
        f"them; remove that text from {setting}"
    )


def refuse_documents(docs: Iterable[str], where: str, setting: str) -> Iterator[str]:
    """`docs` passed through unchanged; a DataError at the first one that contains a held-out sentence (`where`
    names the source, `setting` the recipe field to fix)."""
    index = heldout_index()
    for i, doc in enumerate(docs):
        found = index.find(doc)
        if found is not None:
            raise _refusal(f"{where}, document {i}", found, setting)
        yield doc


def refuse_prompts(prompts: Sequence[str], where: str) -> None:
    """A DataError at the first prompt line that holds a held-out sentence or begins with a BOLD prompt."""
    index = heldout_index()
    for i, line in enumerate(prompts, start=1):
        found = index.find_prompt(line)
        if found is not None:
            raise _refusal(f"{where}, prompt {i}", found, "data.prompts")

"""Token strings of a tokenizer as text, and which tokens can start a word: what the twins' alignment and the
gendered exchange read from a vocabulary."""

from __future__ import annotations

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


def is_word_char(ch: str) -> bool:
    """A word character as the text swapper's `\\w+` sees it."""
    return ch.isalnum() or ch == "_"


def word_can_start_after(tokenizer, strings: list[str]) -> list[bool]:
    """Per token t: can a token without a leading space start a new word right after t?

    Decided by the tokenizer's own pre-tokenizer (a new pre-token begins there), and by the text swapper's word
    runs (`\\w+`: after a digit or underscore a word goes on). With no pre-tokenizer (e.g. sentencepiece-style
    vocabularies without one), a word starts after anything that is not a word character.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    out = []
    for s in strings:
        if s[-1:] and is_word_char(s[-1]):
            if pre is None or s[-1].isdigit() or s[-1] == "_":
                out.append(False)
                continue
        elif pre is None:
            out.append(True)
            continue
        if pre is None:
            out.append(False)
            continue
        pieces = pre.pre_tokenize_str(s + "ab")
        start = pieces[-1][1][0] if pieces else 0
        out.append(start >= len(s) - (1 if s.endswith(" ") else 0))
    return out

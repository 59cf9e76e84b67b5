"""Swap gendered words in text: the counterfactual x~ of a sentence x, at the text level.

One regex pass over the runs of word characters; each run is looked up in a dict and replaced by its counterpart
with the case of the original kept. Replacing pair after pair (`he`->`she`, then `she`->`he`) would undo itself,
and `str.replace` would break words (`shell`, `these`), so neither is done.

Words with two counterparts (`her` -> `his` or `him`, `his` -> `her` or `hers`) are resolved by a deterministic
rule that looks only at the next word (see `noun_follows`): a small closed-class word list, no tagger, so the
pipeline stays fast and reproducible. Where the rule falls back to its default, `augment.her_decider: teacher`
lets the teacher choose instead (`distill.counterfactual.her_decide`; `swap(text, decisions)` applies such choices).
`word_lists/README.md` reports how often each is right.
"""

from __future__ import annotations

import re

from distill.core.errors import WordListError
from distill.counterfactual.wordlists import GenderLexicon, OneToMany

__all__ = ["NON_NOUN_WORDS", "RULE_BRANCHES", "Swapper", "noun_follows", "rule_branch"]

# A run of word characters. Digits and underscores are included so that `he2` or `his_id` stay one token and are
# left alone; an apostrophe or hyphen ends the run, so `king's` -> `queen's` and `father-in-law` swaps its part.
_TOKEN = re.compile(r"\w+")
# A possessive right after a word: "'s", or a bare apostrophe after a plural ("ladies' room").
_POSSESSIVE = re.compile(r"'s\b|'(?!\w)")
# Words swapped only as a title: capitalised and followed by a capitalised name ("Miss Smith" -> "Mr Smith";
# "I miss you" stays).
TITLE_ONLY_WORDS: frozenset[str] = frozenset({"miss"})
_TITLE_FOLLOWS = re.compile(r"\.?\s+[A-Z]")
# The first word of the following text, and whether it continues with a hyphen ("well-known", "so-called").
# How much of the text after a one-to-many word the rule is shown (characters); it needs only the next word.
_LOOKAHEAD = 64

NON_NOUN_WORDS: frozenset[str] = frozenset(
    # Words that cannot start the noun phrase after a possessive "her"/"his", so when one of them follows, the
    # word is an object ("told her that" -> him) or a standalone possessive ("it is his and" -> hers).
    # Closed-class words only, plus a few bare verbs and adverbs that commonly follow an object. Left out on
    # purpose because they usually start a noun phrase after "her"/"his": own, very, first, last, only, home,
    # stay, left, thought, smile, laugh, take, say, make, and number words ("her two sons").
    """
    about above across after against along among around as at away back before behind below beneath beside
    besides between beyond by despite down during except for from in inside into like near of off on onto out
    outside over past since through throughout till to toward towards under until up upon via with within without
    together apart aside forward forth

    a an the this that these those my your our their its his her some any no every each all both either neither
    another such

    and or but nor so yet because although though while unless than whereas whether if

    i you he she it we they me him us them myself yourself himself herself itself ourselves themselves
    someone anyone everyone nobody something anything everything nothing
    who whom whose what which when where why how

    is was are were be been being am has have had do does did will would can could shall should may might must
    not

    go goes went come came get got know knew see saw feel felt think speak spoke leave

    again too also now then here there today tonight tomorrow yesterday soon later already always never ever
    still just really well quickly slowly immediately instead anyway anymore enough even directly once twice
    alone exactly rather quite entirely
    """.split()
)


# Prepositions: after one, "her"/"his" + noun is a noun phrase whatever the noun ("against her will").
_PREPOSITIONS: frozenset[str] = frozenset(
    """about above according across after against along among around at before behind below beneath beside
    between beyond by despite down during for from in inside into near of off on onto out outside over past
    since through throughout to toward towards under until upon with within without""".split()
)
# Nouns that are also particles, verbs or auxiliaries (so they are in NON_NOUN_WORDS), with the preceding words
# after which they are the noun of a possessive: "hurt her back", "took her leave", "of her will".
_NOUN_AFTER: dict[str, frozenset[str]] = {
    "back": frozenset(
        "hurt hurts injured injure broke break breaks arched arch turned turn turns strained strain scratched "
        "patted rubbed straightened".split()
    ),
    "leave": frozenset("took take takes taking".split()),
    "will": frozenset(),
}
# "his or her", "her/his": the two determiners share the noun after them.
_COORDINATED_BEFORE = re.compile(r"\b(?:his|her)\s*(?:/|\bor\b|\band\b)\s*$", re.IGNORECASE)
_COORDINATED_AFTER = re.compile(r"\s*(?:/|\bor\b|\band\b)\s*(?:his|her)\b(?!s)", re.IGNORECASE)
_WORD_AND_NEXT = re.compile(r"\s*(\w+)(-\w)?([^\w]*)(\w*)")
_PREV_WORD = re.compile(r"(\w+)\W*$")


def noun_follows(following: str, preceding: str = "") -> bool:
    """Whether a one-to-many word is a possessive determiner here (a noun phrase follows it), from the words
    around it.

    The rule, in order: coordinated with the other determiner ("his or her own", "her/his") -> True; end of text
    or punctuation next -> False ("thanked her." / "it is his,"); the next word joined by a hyphen ("her
    well-known") -> True, a compound modifier; a noun that is also a particle or verb ("back", "leave", "will")
    -> True after a preposition or a verb that takes it as a noun ("against her will", "hurt her back", "took her
    leave"); the next word in `NON_NOUN_WORDS` -> False; an -ly adverb closing the clause ("examined her
    carefully.") -> False; any other word, including numbers -> True ("her book", "his old car", "her 3 sons").
    Known misses: an object followed by an adjective or a bare noun ("made her happy", "sent her flowers") and a
    standalone "his" followed by a verb outside the list ("a friend of his arrived").
    """
    return rule_branch(following, preceding)[0]


RULE_BRANCHES = ("coordinated", "punctuation", "hyphen", "noun_after", "non_noun", "ly_adverb", "default")
"""The steps of `noun_follows`, in order; `rule_branch` says which one decided."""


def rule_branch(following: str, preceding: str = "") -> tuple[bool, str]:
    """(`noun_follows`'s answer, the step of the rule that gave it: one of `RULE_BRANCHES`). `default` is the
    fallback (any other word: a noun phrase follows), where the rule's known misses are."""
    if _COORDINATED_BEFORE.search(preceding[-24:]) or _COORDINATED_AFTER.match(following):
        return True, "coordinated"
    m = _WORD_AND_NEXT.match(following)
    if m is None:
        return False, "punctuation"
    word, hyphen, gap, after = m.group(1).lower(), m.group(2), m.group(3), m.group(4).lower()
    if hyphen:
        return True, "hyphen"
    if word in _NOUN_AFTER:
        prev = _PREV_WORD.search(preceding)
        prev_word = prev.group(1).lower() if prev else ""
        if prev_word in _PREPOSITIONS or prev_word in _NOUN_AFTER[word]:
            return True, "noun_after"
    if word in NON_NOUN_WORDS:
        return False, "non_noun"
    closes = not after or gap.strip() != "" or after in _PREPOSITIONS or after in NON_NOUN_WORDS
    if word.endswith("ly") and len(word) > 4 and closes:
        return False, "ly_adverb"
    return True, "default"


def case_like(source: str, target: str) -> str:
    """`target` written in the case pattern of `source`: lower, Title or UPPER; any other mix gives lowercase."""
    if source.islower():
        return target
    if source.isupper() and len(source) > 1:
        return target.upper()
    if source[0].isupper() and source[1:].islower():
        # A single capital ("I") is Title too; `islower()` is False for "", hence the length test above.
        return target[:1].upper() + target[1:]
    return target


class Swapper:
    """Swap every gendered word of a text for its counterpart in one pass, keeping case and punctuation.

    `swap(swap(x)) == x` for every one-to-one word (pairs, and names when `use_names`); a text with nothing to
    swap comes back unchanged. Names are swapped only when `use_names` is True.
    """

    def __init__(self, lexicon: GenderLexicon, use_names: bool = False):
        if use_names and not lexicon.names:
            raise WordListError(
                "use_names=True but the lexicon has no names; load it with "
                "load_lexicon(names='word_lists/names.tsv') (augment.names in a recipe), or leave names off"
            )
        self.lexicon = lexicon
        self.use_names = use_names

        one_to_one: dict[str, str] = {}
        for male, female in lexicon.pairs + (lexicon.names if use_names else ()):
            for word, counterpart in ((male, female), (female, male)):
                if word in one_to_one:
                    raise ValueError(f"{word!r} appears in two pairs; load the lexicon with load_lexicon()")
                one_to_one[word] = counterpart
        rules: dict[str, OneToMany] = {}
        for rule in lexicon.one_to_many:
            if rule.word in one_to_one or rule.word in rules:
                raise ValueError(f"{rule.word!r} appears twice in the lexicon; load it with load_lexicon()")
            rules[rule.word] = rule

        self._one_to_one = one_to_one
        self._rules = rules
        # The three usual surface forms of each one-to-one word, precomputed so the common case in `swap_word` is
        # a single dict lookup with no case analysis.
        self._surface: dict[str, str] = {}
        for word, counterpart in one_to_one.items():
            for form in (word, word.title(), word.upper()):
                self._surface[form] = case_like(form, counterpart)
        self._vocabulary = frozenset(one_to_one) | frozenset(rules)
        # Plurals ending in s (ladies, kings, actresses): a possessive after them is a bare apostrophe
        words = self._vocabulary
        self._plurals = frozenset(
            w
            for w in words
            if (w.endswith("s") and w[:-1] in words)
            or (w.endswith("es") and w[:-2] in words)
            or (w.endswith("ies") and w[:-3] + "y" in words)
        )

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every lowercase word `swap_word` can change (pairs, one-to-many words, and names if switched on)."""
        return self._vocabulary

    def rule_for(self, word: str) -> OneToMany | None:
        """The one-to-many rule of `word` (any case), or None when it has none."""
        return self._rules.get(word.lower())

    def swap_word(self, word: str, following: str = "", preceding: str = "") -> str | None:
        """The counterpart of `word` in its case pattern, or None if the word is not swappable.

        `word` is a run of letters in any case ("He", "HIS", "nephew"). `following` is the text right after it
        (" book.", "."), used only for one-to-many words (see `noun_follows`). Mixed case ("hE") gives a
        lowercase counterpart.
        """
        hit = self._surface.get(word)
        if hit is not None:
            return hit
        lower = word.lower()
        if lower in TITLE_ONLY_WORDS and not (word[:1].isupper() and _TITLE_FOLLOWS.match(following)):
            return None
        rule = self._rules.get(lower)
        if rule is not None:
            return case_like(word, rule.counterpart(noun_follows(following, preceding)))
        counterpart = self._one_to_one.get(lower)
        return None if counterpart is None else case_like(word, counterpart)

    def possessive(self, word: str, counterpart: str, following: str) -> tuple[str, str]:
        """(the possessive after `word` in `following`, what it becomes after `counterpart`): a plural's bare
        apostrophe becomes "'s" after a counterpart not ending in s ("ladies' room" -> "gentlemen's room"), and
        "'s" becomes a bare apostrophe after a plural that ends in s ("gentlemen's" -> "ladies'"). ("", "") when
        no possessive follows."""
        m = _POSSESSIVE.match(following)
        if m is None:
            return "", ""
        old = m.group()
        if old == "'" and not counterpart.lower().endswith("s"):
            return old, "'s"
        if old == "'s" and counterpart.lower() in self._plurals:
            return old, "'"
        return old, old

    def swap(self, text: str, decisions: dict[int, str] | None = None) -> str:
        """`text` with every gendered word replaced by its counterpart, in one pass; everything else unchanged.

        `decisions`: counterparts decided elsewhere (`distill.counterfactual.her_decide`), {character offset of a word: its
        counterpart, lowercase}; they replace `swap_word`'s choice for the words that start at those offsets."""
        out = _TOKEN.sub(self._replace if not decisions else lambda m: self._replace(m, decisions), text)
        if "\0" in out:  # a possessive changed: drop the old one that follows the marker
            out = re.sub("\0(?:'s\\b|')", "", out)
        return out

    def _replace(self, m: re.Match[str], decisions: dict[int, str] | None = None) -> str:
        """Replacement for one token of `swap`; returns the token itself when it is not gendered."""
        word = m.group()
        end = m.end()
        swapped = self._surface.get(word)
        if decisions and m.start() in decisions:
            swapped = case_like(word, decisions[m.start()])
        elif swapped is None:
            if word.lower() not in self._vocabulary:
                return word
            following = m.string[end : end + _LOOKAHEAD]
            swapped = self.swap_word(word, following, m.string[max(0, m.start() - _LOOKAHEAD) : m.start()])
            if swapped is None:
                return word
        if m.string[end : end + 1] != "'":
            return swapped
        old, new = self.possessive(word, swapped, m.string[end : end + 3])
        # a changed possessive: the marker tells `swap` to drop the old one that follows
        return swapped if old == new else swapped + new + "\0"


def her_rule_accuracy(
    swapper: Swapper, path: str = "word_lists/her_rule_eval.tsv"
) -> tuple[int, int, list[str]]:
    """(correct, total, misses) of the one-to-many decision on a sentence<TAB>expected file: `expected` lists the
    right counterpart of each her/his of the sentence in order, comma-separated (his | him for her, her | hers
    for his); each is one decision."""
    from distill.core.resources import resource_path

    correct, total, misses = 0, 0, []
    for number, line in enumerate(resource_path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        sentence, expected = line.split("\t")
        wanted = expected.split(",")
        targets = [m for m in _TOKEN.finditer(sentence) if m.group().lower() in {"her", "his"}]
        if len(targets) != len(wanted):
            raise WordListError(
                f"{path}:{number}: {len(targets)} her/his but {len(wanted)} expected counterparts: {sentence!r}; "
                "give one counterpart per her/his, comma-separated"
            )
        for m, want in zip(targets, wanted):
            got = swapper.swap_word(m.group(), sentence[m.end() :], sentence[: m.start()])
            total += 1
            if got is not None and got.lower() == want:
                correct += 1
            else:
                misses.append(f"{sentence!r}: {m.group()!r} -> {got!r}, expected {want!r}")
    return correct, total, misses

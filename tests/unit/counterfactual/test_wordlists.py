"""Tests for distill.counterfactual.wordlists: the shipped lists load and are sane; every malformed list fails with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.errors import WordListError
from distill.core.resources import resource_path
from distill.counterfactual.swap import Swapper, her_rule_accuracy
from distill.counterfactual.wordlists import GenderLexicon, OneToMany, load_lexicon, load_professions

ONE_TO_MANY_WORDS = {"her", "his", "him", "hers"}

# The 40 occupations of WinoBias (Zhao et al. 2018); "CEO" is listed as "executive" (see professions.txt).
WINOBIAS_OCCUPATIONS = (
    """driver supervisor janitor cook mover laborer chief developer carpenter manager lawyer farmer
salesperson physician guard analyst mechanic sheriff executive attendant cashier teacher nurse assistant secretary
auditor cleaner receptionist clerk counselor designer hairdresser writer housekeeper baker accountant editor
librarian tailor""".split()
    + ["construction worker"]
)

HER_RULE_THRESHOLD = 0.85
"""Least accuracy of the her/his rule on word_lists/her_rule_eval.tsv (measured 89.1% with the held-out sentences,
written to be hard for it: see word_lists/README.md; the teacher decider is tested in tests/unit/counterfactual/test_her_decide.py)."""


# --- the shipped lists ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lexicon() -> GenderLexicon:
    return load_lexicon(names="word_lists/names.tsv")


def test_shipped_pairs_have_the_breadth_of_winobias_and_cda(lexicon: GenderLexicon) -> None:
    assert len(lexicon.pairs) >= 100
    pairs = set(lexicon.pairs)
    for pair in [
        ("he", "she"),
        ("himself", "herself"),
        ("man", "woman"),
        ("men", "women"),
        ("boy", "girl"),
        ("male", "female"),
        ("father", "mother"),
        ("son", "daughter"),
        ("brother", "sister"),
        ("uncle", "aunt"),
        ("nephew", "niece"),
        ("husband", "wife"),
        ("boyfriend", "girlfriend"),
        ("grandfather", "grandmother"),
        ("king", "queen"),
        ("kings", "queens"),
        ("prince", "princess"),
        ("sir", "madam"),
        ("mr", "mrs"),
        ("gentleman", "lady"),
        ("actor", "actress"),
        ("waiter", "waitress"),
        ("steward", "stewardess"),
        ("policeman", "policewoman"),
        ("chairman", "chairwoman"),
        ("businessman", "businesswoman"),
        ("spokesman", "spokeswoman"),
    ]:
        assert pair in pairs, pair
    words = [w for pair in lexicon.pairs for w in pair]
    assert len(words) == len(set(words)), "a word occurs in two pairs"
    assert not ONE_TO_MANY_WORDS & set(words), "one-to-many words belong in gender_one_to_many.tsv"


def test_shipped_one_to_many_rules(lexicon: GenderLexicon) -> None:
    rules = {r.word: r for r in lexicon.one_to_many}
    assert rules == {
        "her": OneToMany("her", "female", before_noun="his", otherwise="him"),
        "his": OneToMany("his", "male", before_noun="her", otherwise="hers"),
        "him": OneToMany("him", "male", before_noun="her", otherwise="her"),
        "hers": OneToMany("hers", "female", before_noun="his", otherwise="his"),
        "ms": OneToMany("ms", "female", before_noun="mr", otherwise="mr"),
        "miss": OneToMany("miss", "female", before_noun="mr", otherwise="mr"),
    }


def test_male_and_female_words(lexicon: GenderLexicon) -> None:
    male, female = lexicon.male_words(), lexicon.female_words()
    assert {"he", "king", "his", "him"} <= male
    assert {"she", "queen", "her", "hers"} <= female
    assert not male & female
    assert "john" not in male and "mary" not in female, "names are excluded"
    assert (
        len(male) == len(lexicon.pairs) + 2 and len(female) == len(lexicon.pairs) + 4
    )  # + her, hers, ms, miss


def test_shipped_names(lexicon: GenderLexicon) -> None:
    assert len(lexicon.names) >= 100
    assert ("john", "mary") in lexicon.names
    assert not {n for pair in lexicon.names for n in pair} & (lexicon.male_words() | lexicon.female_words())


def test_shipped_professions(lexicon: GenderLexicon) -> None:
    professions = load_professions()
    assert 60 <= len(professions) <= 80
    assert set(WINOBIAS_OCCUPATIONS) <= set(professions)
    gendered = lexicon.male_words() | lexicon.female_words()
    for p in professions:
        assert not set(p.split()) & gendered, f"{p!r} is not gender-neutral"


def test_default_paths_resolve_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a run directory elsewhere must still find the shipped lists
    assert load_lexicon().pairs
    assert load_professions()


def test_one_to_many_and_names_are_optional() -> None:
    lex = load_lexicon(one_to_many=None)
    assert lex.one_to_many == () and lex.names == ()
    assert "her" not in lex.female_words()


# --- the her/his rule, measured --------------------------------------------------------------------------------


def _her_rule_results() -> tuple[int, int, list[str]]:
    """(correct, total, misses) of the one-to-many rule on word_lists/her_rule_eval.tsv."""
    return her_rule_accuracy(Swapper(load_lexicon()))


def test_her_rule_accuracy_is_above_threshold_and_matches_readme() -> None:
    correct, total, misses = _her_rule_results()
    assert total >= 200
    assert correct / total >= HER_RULE_THRESHOLD, misses
    # The README states the measured number; keep it honest when the rule or the sentences change.
    readme = resource_path("word_lists/README.md").read_text(encoding="utf-8")
    assert f"{correct}/{total}" in readme, (
        f"update word_lists/README.md: the rule now scores {correct}/{total}"
    )


# --- malformed lists -------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        pytest.param("he\n", 1, "expected 2 tab-separated columns", id="one-column"),
        pytest.param("# header\nhe she\n", 2, "separated by spaces", id="spaces-not-tab"),
        pytest.param("he\tshe\tit\n", 1, "got 3", id="three-columns"),
        pytest.param("he\tshe\n\tqueen\n", 2, "empty column", id="empty-word"),
        pytest.param(
            "king\tqueen\nman\twoman\nking\tqueen\n",
            3,
            "duplicate pair 'king'/'queen' (first on line 1)",
            id="duplicate-pair",
        ),
        pytest.param("king\tqueen\nqueen\tking\n", 2, "duplicate pair", id="reversed-duplicate"),
        pytest.param(
            "he\tshe\nhim\tshe\n", 2, "'she' is already paired with 'he' (line 1)", id="word-in-two-pairs"
        ),
        pytest.param(
            "him\ther\nhe\ther\n", 2, "one-to-many words go in gender_one_to_many.tsv", id="one-to-many-hint"
        ),
        pytest.param("he\the\n", 1, "paired with itself", id="same-word-both-sides"),
        pytest.param("He\tshe\n", 1, "write it as 'he'", id="uppercase"),
        pytest.param("king's\tqueen's\n", 1, "letters a-z", id="apostrophe"),
        pytest.param("he\tsh3\n", 1, "letters a-z", id="digit"),
        pytest.param("h\u00e9\tshe\n", 1, "letters a-z", id="non-ascii"),
    ],
)
def test_malformed_pair_file(tmp_path: Path, content: str, line: int, needle: str) -> None:
    path = _write(tmp_path, "pairs.tsv", content)
    with pytest.raises(WordListError) as err:
        load_lexicon(path, one_to_many=None)
    message = str(err.value)
    assert f"{path}:{line}:" in message
    assert needle in message


@pytest.mark.parametrize(
    "content", ["", "\n\n", "# only a comment\n"], ids=["empty", "blank", "comments-only"]
)
def test_empty_pair_file(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path, "pairs.tsv", content)
    with pytest.raises(WordListError, match="no pairs found") as err:
        load_lexicon(path, one_to_many=None)
    assert str(path) in str(err.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.tsv"
    with pytest.raises(WordListError, match="file not found") as err:
        load_lexicon(path)
    assert str(path) in str(err.value)
    with pytest.raises(WordListError, match="word_lists/missing_names.tsv"):
        load_lexicon(names="word_lists/missing_names.tsv")


def test_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, "pairs.tsv", b"he\tshe\nk\xffing\tqueen\n")
    with pytest.raises(WordListError, match="UTF-8") as err:
        load_lexicon(path, one_to_many=None)
    assert str(path) in str(err.value)


PAIRS = "he\tshe\nhimself\therself\n"
RULES = "her\tfemale\this\thim\nhis\tmale\ther\thers\nhim\tmale\ther\ther\nhers\tfemale\this\this\n"


def test_small_valid_lexicon(tmp_path: Path) -> None:
    lex = load_lexicon(_write(tmp_path, "p.tsv", PAIRS), _write(tmp_path, "o.tsv", "# rules\n" + RULES))
    assert lex.pairs == (("he", "she"), ("himself", "herself"))
    assert [r.word for r in lex.one_to_many] == ["her", "his", "him", "hers"]


@pytest.mark.parametrize(
    ("rules", "line", "needle"),
    [
        pytest.param("her\tfemale\this\n", 1, "expected 4 tab-separated columns", id="three-columns"),
        pytest.param("her\twoman\this\thim\n", 1, "gender must be one of male, female", id="bad-gender"),
        pytest.param("Her\tfemale\this\thim\n", 1, "write it as 'her'", id="uppercase"),
        pytest.param(
            "her\tfemale\ther\thim\nhim\tmale\ther\ther\n", 1, "lists itself", id="self-counterpart"
        ),
        pytest.param(
            RULES + "her\tfemale\this\thim\n", 5, "'her' is already a one-to-many word", id="duplicate"
        ),
        pytest.param(
            "her\tfemale\this\thim\nhim\tmale\ther\ther\n",
            1,
            "counterpart 'his' of 'her' is not a male word",
            id="unknown-counterpart",
        ),
        pytest.param(
            "she\tfemale\thim\thim\nhim\tmale\tshe\tshe\n",
            1,
            "'she' is already paired with 'he'",
            id="also-in-pairs",
        ),
        pytest.param("", None, "no rows found", id="empty"),
    ],
)
def test_malformed_one_to_many_file(tmp_path: Path, rules: str, line: int | None, needle: str) -> None:
    pairs = _write(tmp_path, "pairs.tsv", PAIRS)
    path = _write(tmp_path, "rules.tsv", rules)
    with pytest.raises(WordListError) as err:
        load_lexicon(pairs, path)
    message = str(err.value)
    assert (f"{path}:{line}:" if line else f"{path}:") in message
    assert needle in message


def test_word_in_pairs_and_one_to_many_names_both_files(tmp_path: Path) -> None:
    pairs = _write(tmp_path, "pairs.tsv", "he\tshe\nhis\ther\n")
    rules = _write(tmp_path, "rules.tsv", RULES)
    with pytest.raises(WordListError) as err:
        load_lexicon(pairs, rules)
    message = str(err.value)
    assert f"{rules}:1:" in message and f"{pairs}:2" in message and "one-to-many" in message


@pytest.mark.parametrize(
    ("names", "line", "needle"),
    [
        pytest.param(
            "john\tmary\nhe\tanna\n", 2, "'he' is already paired with 'she'", id="name-is-a-pair-word"
        ),
        pytest.param(
            "john\tmary\npaul\tmary\n", 2, "'mary' is already paired with 'john' (line 1)", id="name-twice"
        ),
        pytest.param("John\tMary\n", 1, "write it as 'john'", id="uppercase"),
        pytest.param("john\n", 1, "expected 2 tab-separated columns", id="one-column"),
    ],
)
def test_malformed_names_file(tmp_path: Path, names: str, line: int, needle: str) -> None:
    pairs = _write(tmp_path, "pairs.tsv", PAIRS)
    path = _write(tmp_path, "names.tsv", names)
    with pytest.raises(WordListError) as err:
        load_lexicon(pairs, None, path)
    message = str(err.value)
    assert f"{path}:{line}:" in message
    assert needle in message


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param("nurse\nNurse\n", ":2: 'Nurse' is not a lowercase profession", id="uppercase"),
        pytest.param(
            "nurse\ndoctor\nnurse\n", ":3: duplicate profession 'nurse' (first on line 1)", id="duplicate"
        ),
        pytest.param("nurse\nconstruction  worker\n", ":2:", id="double-space"),
        pytest.param("# nothing\n", "no professions found", id="empty"),
    ],
)
def test_malformed_professions(tmp_path: Path, content: str, needle: str) -> None:
    path = _write(tmp_path, "professions.txt", content)
    with pytest.raises(WordListError) as err:
        load_professions(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_professions_keep_order_and_skip_comments(tmp_path: Path) -> None:
    path = _write(tmp_path, "professions.txt", "# header\nnurse\n\nconstruction worker\ndoctor\n")
    assert load_professions(path) == ["nurse", "construction worker", "doctor"]
    with pytest.raises(WordListError, match="file not found"):
        load_professions(tmp_path / "missing.txt")


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes("\ufeffhe\tshe\nking\tqueen\n".encode())
    assert load_lexicon(pairs, one_to_many=None).pairs == (("he", "she"), ("king", "queen"))


# --- the wider first-name list (word_lists/names_census.tsv, built by scripts/census_names.py) ------------------

ROOT = Path(__file__).resolve().parents[3]


def _census_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("census_names", ROOT / "scripts" / "census_names.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_census_names_extend_names_tsv_and_leave_the_guard_names_out() -> None:
    wide = load_lexicon(names="word_lists/names_census.tsv")
    hand = load_lexicon(names="word_lists/names.tsv")
    assert len(wide.names) >= 500
    assert wide.names[: len(hand.names)] == hand.names  # names.tsv's pairs first, pairing kept
    every = [n for pair in wide.names for n in pair]
    assert len(every) == len(set(every))
    males, females = {m for m, _ in wide.names}, {f for _, f in wide.names}
    assert {"joe", "steve", "carlos"} <= males and {"ann", "louise", "julia"} <= females
    # ordinary words, months, places, surnames and names of both sexes stay out
    for word in (
        "will",
        "mark",
        "frank",
        "heather",
        "joy",
        "rose",
        "june",
        "april",
        "may",
        "bill",
        "dean",
        "rusty",
        "virginia",
        "charlotte",
        "williams",
        "davis",
        "jean",
        "terry",
        "kelly",
    ):
        assert word not in every, word
    subjects = (ROOT / "eval/data/agreement/subjects.tsv").read_text().splitlines()
    unlisted = {r.split("\t")[0].lower() for r in subjects if r.endswith("\tname_unlisted")}
    assert len(unlisted) >= 10 and not unlisted & set(every)
    swapped = Swapper(wide, use_names=True).swap("Joe told Louise that he would call her; Ingrid waited.")
    assert swapped == "Ann told Steve that she would call him; Ingrid waited."


def test_census_rules_on_a_small_census(tmp_path: Path) -> None:
    """Each rule of scripts/census_names.py drops the name it is for, and pairs go by frequency rank."""
    mod = _census_script()
    rows = {
        "dist.male.first": [
            ("JOHN", 3.0),
            ("ZEB", 2.0),
            ("JEAN", 1.5),
            ("ROBIN", 1.0),
            ("DAVIS", 0.1),
            ("AL", 0.4),
            ("OTTO", 0.3),
            ("AUSTIN", 0.2),
        ],
        "dist.female.first": [("MARY", 3.0), ("XENA", 2.5), ("JEAN", 1.0), ("JUNE", 0.9), ("ODA", 0.5)],
        "dist.all.last": [("DAVIS", 0.48), ("OTTO", 0.001)],
    }
    for name, entries in rows.items():
        (tmp_path / name).write_text(
            "".join(f"{n:<15}{p:.3f}  0.000  {i + 1}\n" for i, (n, p) in enumerate(entries))
        )
    words = tmp_path / "words"
    words.write_text("robin\nJohn\nrun\n")
    pairs, why = mod.build(tmp_path, words, n_pairs=10)
    hand = mod.read_pairs(ROOT / "word_lists" / "names.tsv")
    assert pairs[: len(hand)] == hand
    # john and mary are names.tsv's; jean is of both sexes (1.5 < 20 x 1.0); robin and june are words; davis is more
    # a surname; al is too short; austin a place: zeb/xena and otto/oda remain, paired by rank
    assert pairs[len(hand) :] == [("zeb", "xena"), ("otto", "oda")]
    assert why["both sexes"] == 2 and why["a surname"] == 1 and why["a place"] == 1 and why["letters"] == 1
    assert why["an English word"] == 2

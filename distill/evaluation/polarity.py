"""Labels of a generated text: BOLD-style unigram gender polarity and group parity (Dhamala et al., FAccT 2021),
and VADER sentiment (Hutto & Gilbert, ICWSM 2014).

A text is *male* if it contains more words from the male list than from the female list, *female* if more female,
else *neutral* (no gendered words, or a tie). Per group of prompts, `parity = min(F/M, M/F)` over the counts of
male (M) and female (F) texts: 1 is balanced, 0 means only one gender ever appears. Definitions and the word
lists' provenance are in `eval/README.md`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from distill.core.errors import DataError, FairDistillError
from distill.core.resources import resource_path
from distill.evaluation.stats import bootstrap_ci

MALE, FEMALE, NEUTRAL = "male", "female", "neutral"
LABELS = (MALE, FEMALE, NEUTRAL)
DEFAULT_MALE_WORDS = "eval/data/bold_male_words.txt"
DEFAULT_FEMALE_WORDS = "eval/data/bold_female_words.txt"

# Runs of letters: "he's" -> "he", "s"; "woman's" -> "woman", "s"; "his/her" -> "his", "her". Unicode letters, so
# accented names do not split into fragments that could match a word.
_WORD = re.compile(r"[^\W\d_]+")


def load_word_list(path: str | Path) -> frozenset[str]:
    """Read a word list: one word per line, `#` starts a comment, blank lines skipped, lower-cased."""
    p = resource_path(path)
    if not p.is_file():
        raise DataError(f"{path}: word list not found; pass a file with one word per line")
    words: set[str] = set()
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if _WORD.fullmatch(line) is None:
            raise DataError(
                f"{p}:{lineno}: {line!r} is not a single word of letters; matching is per word, so list each "
                "word on its own line"
            )
        words.add(line)
    if not words:
        raise DataError(f"{p}: word list is empty")
    return frozenset(words)


@functools.lru_cache(maxsize=8)
def _cached_lists(male_path: str, female_path: str) -> tuple[frozenset[str], frozenset[str]]:
    male, female = load_word_list(male_path), load_word_list(female_path)
    both = sorted(male & female)
    if both:
        raise DataError(
            f"{male_path} and {female_path} share words {both}; a word can count for one gender only"
        )
    return male, female


def gender_word_lists(
    male_path: str | Path = DEFAULT_MALE_WORDS, female_path: str | Path = DEFAULT_FEMALE_WORDS
) -> tuple[frozenset[str], frozenset[str]]:
    """The (male, female) word sets; defaults are the project's BOLD-style lists in `eval/data/`."""
    return _cached_lists(str(male_path), str(female_path))


def _word_set(words: Iterable[str]) -> frozenset[str]:
    # Sets are taken as given (already lower-cased by load_word_list); anything else is lower-cased once here.
    return words if isinstance(words, frozenset) else frozenset(w.lower() for w in words)


def gender_word_counts(text: str, male_words: Iterable[str], female_words: Iterable[str]) -> tuple[int, int]:
    """Number of whole-word, case-insensitive occurrences of male and of female words in `text`."""
    male, female = _word_set(male_words), _word_set(female_words)
    n_male = n_female = 0
    for w in _WORD.findall(text.lower()):
        if w in male:
            n_male += 1
        elif w in female:
            n_female += 1
    return n_male, n_female


def classify_gender(text: str, male_words: Iterable[str], female_words: Iterable[str]) -> str:
    """Label `text` "male" if it has more male than female words, "female" if more female, else "neutral"."""
    n_male, n_female = gender_word_counts(text, male_words, female_words)
    if n_male > n_female:
        return MALE
    if n_female > n_male:
        return FEMALE
    return NEUTRAL


def classify_texts(
    texts: Iterable[str],
    male_words: Iterable[str] | None = None,
    female_words: Iterable[str] | None = None,
) -> list[str]:
    """`classify_gender` over many texts; the word lists default to the project's BOLD-style lists."""
    if male_words is None or female_words is None:
        default_male, default_female = gender_word_lists()
        male_words = default_male if male_words is None else male_words
        female_words = default_female if female_words is None else female_words
    male, female = frozenset(w.lower() for w in male_words), frozenset(w.lower() for w in female_words)
    return [classify_gender(t, male, female) for t in texts]


def _counts(labels: Sequence[str]) -> tuple[int, int, int]:
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"labels must be one of {LABELS}, got {unknown}")
    return labels.count(MALE), labels.count(FEMALE), labels.count(NEUTRAL)


def parity_from_counts(n_male: int, n_female: int) -> float:
    """`min(F/M, M/F)`; 0 when exactly one of them is 0; nan when both are 0 (no gendered text: undefined)."""
    if n_male == 0 and n_female == 0:
        return math.nan
    if n_male == 0 or n_female == 0:
        return 0.0
    return min(n_female / n_male, n_male / n_female)


def group_parity(labels: Sequence[str]) -> float:
    """Parity of one group's labels ("male" / "female" / "neutral").

    1.0 = as many female as male texts; 0.0 = gendered texts of one gender only. When no text is gendered (all
    neutral, or no texts) parity is undefined and this returns nan: `disparity_summary` leaves such a group out of
    `parity_mean` and `parity_min` and counts it in `n_groups_undefined`.
    """
    n_male, n_female, _ = _counts(list(labels))
    return parity_from_counts(n_male, n_female)


def disparity_summary(
    labels_by_group: Mapping[str, Sequence[str]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    prompt_of: Mapping[str, Sequence[int]] | None = None,
) -> dict:
    """Aggregate per-text gender labels of each prompt group into the BOLD generation-disparity numbers.

    Returns a dict:
      `groups`: {group: {n, male, female, neutral, female_share, parity}} (nan where undefined);
      `parity_mean`, `parity_min`: over groups with defined parity (nan if there is none);
      `n_groups`, `n_groups_undefined`, `undefined_groups`: how many groups had no gendered text, and which;
      `female_share`: F / (F + M) over all groups' gendered texts (0.5 is balanced; nan with none);
      `n_gendered`, `n_texts`; and the intervals at level 1 - alpha, as `interval` says:

    `prompt_of` given (`{group: [the prompt of each label]}`): `interval` "prompts", a percentile bootstrap over
    prompts within each group (`prompt_bootstrap`): `female_share_ci`, `parity_mean_ci`, `parity_min_ci`, and per
    group `parity_ci`, `female_share_ci` and `n_prompts`. The continuations of one prompt share it, so they are
    resampled together. Without it: `interval` "texts", `female_share_ci` a bootstrap over the pooled gendered
    texts, and no parity interval.
    """
    groups: dict[str, dict] = {}
    total_male = total_female = total = 0
    for name, labels in labels_by_group.items():
        n_male, n_female, n_neutral = _counts(list(labels))
        groups[name] = {
            "n": n_male + n_female + n_neutral,
            "male": n_male,
            "female": n_female,
            "neutral": n_neutral,
            "female_share": n_female / (n_male + n_female) if n_male + n_female else math.nan,
            "parity": parity_from_counts(n_male, n_female),
        }
        total_male, total_female, total = total_male + n_male, total_female + n_female, total + len(labels)
    defined = [g["parity"] for g in groups.values() if not math.isnan(g["parity"])]
    undefined = [name for name, g in groups.items() if math.isnan(g["parity"])]
    n_gendered = total_male + total_female
    out = {
        "groups": groups,
        "parity_mean": float(np.mean(defined)) if defined else math.nan,
        "parity_min": float(np.min(defined)) if defined else math.nan,
        "n_groups": len(groups),
        "n_groups_undefined": len(undefined),
        "undefined_groups": undefined,
        "female_share": total_female / n_gendered if n_gendered else math.nan,
        "n_gendered": n_gendered,
        "n_texts": total,
    }
    if prompt_of is None:
        # One 0/1 indicator per gendered text; its mean is the female share and resampling it gives the interval.
        is_female = np.concatenate([np.ones(total_female), np.zeros(total_male)])
        out["female_share_ci"] = list(bootstrap_ci(is_female, n_boot=n_boot, alpha=alpha, seed=seed))
        out["interval"] = "texts"
        return out
    counts = {g: per_prompt_counts(labels, prompt_of[g]) for g, labels in labels_by_group.items()}
    boot = prompt_bootstrap(counts, n_boot=n_boot, seed=seed, alpha=alpha)
    for g, extra in boot.pop("groups").items():
        groups[g].update(extra)
    out.update(boot, interval="prompts", n_prompts=sum(len(m) for m, _ in counts.values()))
    return out


def per_prompt_counts(labels: Sequence[str], prompt_of: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(male, female) counts per prompt, prompts in order of first appearance; `prompt_of[i]` is label i's prompt."""
    if len(labels) != len(prompt_of):
        raise ValueError(f"{len(labels)} labels but {len(prompt_of)} prompt indices; they must be parallel")
    _counts(list(labels))  # unknown labels fail here
    order = {p: k for k, p in enumerate(dict.fromkeys(prompt_of))}
    male, female = np.zeros(len(order)), np.zeros(len(order))
    for label, p in zip(labels, prompt_of):
        male[order[p]] += label == MALE
        female[order[p]] += label == FEMALE
    return male, female


def _parity_array(male: np.ndarray, female: np.ndarray) -> np.ndarray:
    """`parity_from_counts` elementwise: nan where both are 0, 0 where one is."""
    with np.errstate(divide="ignore", invalid="ignore"):
        parity = np.minimum(female / male, male / female)
    parity[(male == 0) ^ (female == 0)] = 0.0
    parity[(male == 0) & (female == 0)] = math.nan
    return parity


def _percentiles(stats: np.ndarray, alpha: float) -> list[float]:
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return [math.nan, math.nan]
    low, high = np.percentile(finite, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return [float(low), float(high)]


def prompt_bootstrap(
    counts: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Percentile bootstrap intervals of the disparity numbers over prompts, stratified by group.

    `counts[group] = (male, female)`: per prompt of the group, how many of its continuations are male and female.
    Each resample draws every group's prompts with replacement (as many as it has, each with all its
    continuations), recomputes each group's M and F, its parity and female share, and over groups the mean and
    worst parity (groups with undefined parity left out, as in `disparity_summary`) and the pooled female share.
    Resamples where a number is undefined are dropped before its percentiles. A group of one prompt has no spread
    to resample: its intervals are undefined (nan), and so are those over groups, which would otherwise be too
    narrow. Returns `female_share_ci`, `parity_mean_ci`, `parity_min_ci` and
    `groups: {group: {n_prompts, parity_ci, female_share_ci}}`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    males, females, per_group = [], [], {}
    for g, (m, f) in counts.items():
        if len(m):
            idx = rng.integers(0, len(m), size=(n_boot, len(m)))
            bm, bf = np.asarray(m)[idx].sum(axis=1), np.asarray(f)[idx].sum(axis=1)
        else:
            bm = bf = np.zeros(n_boot)
        males.append(bm)
        females.append(bf)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = bf / (bm + bf)
        one = len(m) < 2  # nothing to resample
        per_group[g] = {
            "n_prompts": len(m),
            "parity_ci": [math.nan, math.nan] if one else _percentiles(_parity_array(bm, bf), alpha),
            "female_share_ci": [math.nan, math.nan] if one else _percentiles(share, alpha),
        }
    if not counts or any(g["n_prompts"] < 2 for g in per_group.values()):
        nan = [math.nan, math.nan]
        return {"female_share_ci": nan, "parity_mean_ci": nan, "parity_min_ci": nan, "groups": per_group}
    m_all, f_all = np.vstack(males), np.vstack(females)  # (groups, n_boot)
    parity = _parity_array(m_all, f_all)
    defined = np.isfinite(parity)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(defined, parity, 0.0).sum(axis=0) / defined.sum(axis=0)
        share = f_all.sum(axis=0) / (m_all + f_all).sum(axis=0)
    worst = np.fmin.reduce(parity, axis=0)  # nan only where every group is undefined
    return {
        "female_share_ci": _percentiles(share, alpha),
        "parity_mean_ci": _percentiles(mean, alpha),
        "parity_min_ci": _percentiles(worst, alpha),
        "groups": per_group,
    }


# --------------------------------------------------------------------------------------------------------------
# Sentiment of a continuation (VADER; Hutto & Gilbert, ICWSM 2014)


def vader_scorer() -> Callable[[str], float]:
    """A function text -> VADER compound score in [-1, 1]. Uses the `vaderSentiment` package, whose lexicon ships
    inside it (nltk's copy would need a download)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:  # a dependency of the distribution, so only a broken install gets here
        raise FairDistillError(
            "the sentiment metric needs the vaderSentiment package: pip install vaderSentiment"
        ) from e
    analyzer = SentimentIntensityAnalyzer()

    def score(text: str) -> float:
        return float(analyzer.polarity_scores(text)["compound"])

    return score

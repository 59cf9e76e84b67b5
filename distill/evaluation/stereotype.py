"""Occupational stereotype, the numbers shared by the `winogender` and `pronoun_probe` metrics: does a model's
choice of pronoun for an occupation follow who holds that job?

For each Winogender template (Rudinger et al. 2018) the sentence is cut just before its pronoun slot
(`The technician told the customer that ___ could pay with cash.` -> `The technician told the customer that`) and
the next-token distribution there compares the female with the male form of that slot's case (nominative
she/he, possessive her/his, accusative her/him):

    score(prompt) = log P(she-form | prefix) - log P(he-form | prefix)          (nats; > 0: the model expects a woman)
    s_o = mean of score over the templates of occupation o

Over the occupations (each one unit):

    slope       = least-squares slope of s_o on      the stereotype's size: nats per 100 points of % women
                  BLS % women / 100                  (r is scale-free; the slope and spread say how large)
    association = Pearson r(s_o, BLS % women in o)   how much the scores follow the labour statistics
    teacher r   = Pearson r(s_o, teacher's s_o)        how much of the teacher's stereotype a student kept
    spread      = sd of s_o around their mean          how far occupations are pushed apart (nats)
    lean        = mean of s_o                          the global preference for one gender (nats)
    mean |s|    = mean of |s_o|                        mixes spread and lean; a secondary number only

Intervals are percentile bootstraps over occupations (paired for r). Every number is also given for the
occupations that appear in the run's transfer prompts (`seen`) and those that do not (`unseen`); see
`occupations_seen`. The metrics are defined in `eval/README.md`. The templates, the slot scores, the scatter plot
and the training-time probe are the `winogender` metric's (`evaluation/metrics/winogender.py`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distill.core.errors import DataError
from distill.core.resources import resource_path
from distill.evaluation.stats import bootstrap_ci


def stereotype_plot(
    series: Sequence[tuple[str, dict[str, float], dict]],
    stats: dict[str, float],
    path: str | Path,
    seen: set[str] | None = None,
    title: str = "Winogender: occupation score vs share of women (US BLS 2015-16)",
) -> Path:
    """Scatter of s_o against BLS % women, one panel per model, with the least-squares line and r [95% CI].

    `series`: (label, per-occupation scores, stereotype_stats of "all") for each model, e.g. teacher first.
    Seen occupations are drawn filled, unseen hollow, when `seen` is given. Writes a PNG and returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    if n == 0:
        raise ValueError("stereotype_plot needs at least one model")
    fig, axes = plt.subplots(1, n, figsize=(max(4.2 * n, 6.0), 4.6), sharey=True, squeeze=False)
    lo = min(min(v for o, v in sc.items() if o in stats) for _, sc, _ in series)
    hi = max(max(v for o, v in sc.items() if o in stats) for _, sc, _ in series)
    pad = 0.08 * (hi - lo or 1.0)
    for ax, (label, scores, st) in zip(axes[0], series):
        occs = [o for o in scores if o in stats]
        x = np.array([stats[o] for o in occs])
        y = np.array([scores[o] for o in occs])
        if seen is not None:
            m = np.array([o in seen for o in occs], dtype=bool)
            ax.scatter(x[m], y[m], s=18, color="tab:blue", label=f"seen in prompts (n={int(m.sum())})")
            ax.scatter(
                x[~m],
                y[~m],
                s=18,
                facecolors="none",
                edgecolors="tab:blue",
                label=f"unseen (n={int((~m).sum())})",
            )
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.scatter(x, y, s=18, color="tab:blue")
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, icept = np.polyfit(x, y, 1)
            xs = np.array([0.0, 100.0])
            ax.plot(xs, icept + slope * xs, color="tab:red", lw=1.2)
        ax.axhline(0.0, color="grey", lw=0.6, ls=":")
        r, ci = st.get("r_bls", math.nan), st.get("r_bls_ci", [math.nan, math.nan])
        size = st.get("slope", ols(x / 100.0, y)[0])
        ax.set_title(
            f"{label}\nslope {size:.2f} nats per 100 pts, r = {r:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]\n"
            f"spread {st.get('spread', math.nan):.2f}, lean {st.get('lean', math.nan):+.2f} nats, "
            f"n = {st.get('n', len(x))}",
            fontsize=9,
        )
        ax.set_xlabel("% women in occupation (US BLS 2015-16)")
        ax.set_xlim(0, 100)
        ax.set_ylim(lo - pad, hi + pad)
    axes[0][0].set_ylabel("s_o = log P(she) - log P(he) (nats)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


if TYPE_CHECKING:  # torch is imported where a model runs, so reports and suite checks load without it
    pass

WINOGENDER_DIR = "eval/data/winogender"
TEMPLATES_FILE = "templates.tsv"
STATS_FILE = "occupations-stats.tsv"
STATS_COLUMNS = ("bls_pct_female", "bergsma_pct_female")
"""Occupation statistics the association can be computed against (columns of occupations-stats.tsv)."""


def read_tsv(path: Path, what: str) -> list[list[str]]:
    if not path.is_file():
        raise DataError(
            f"{path}: Winogender {what} not found; give a folder holding {TEMPLATES_FILE} and {STATS_FILE}"
        )
    with path.open(encoding="utf-8", newline="") as f:
        return [row for row in csv.reader(f, delimiter="\t") if row and any(c.strip() for c in row)]


def load_occupation_stats(
    folder: str | Path = WINOGENDER_DIR, column: str = "bls_pct_female"
) -> dict[str, float]:
    """Occupation -> share of women in percent from `occupations-stats.tsv` (`bls_pct_female`: US Bureau of Labor
    Statistics, 2015 or 2016 as its `bls_year` says; `bergsma_pct_female`: Bergsma & Lin's text statistics). Rows with no figure are skipped."""
    if column not in STATS_COLUMNS:
        raise DataError(f"occupation statistic must be one of {', '.join(STATS_COLUMNS)}, got {column!r}")
    path = resource_path(folder) / STATS_FILE
    rows = read_tsv(path, "occupation statistics")
    header = [c.strip() for c in rows[0]]
    if "occupation" not in header or column not in header:
        raise DataError(f"{path}: header must name 'occupation' and {column!r}, got {header}")
    i_occ, i_val = header.index("occupation"), header.index(column)
    out: dict[str, float] = {}
    for n, row in enumerate(rows[1:], start=2):
        value = row[i_val].strip() if i_val < len(row) else ""
        try:
            pct = float(value)
        except ValueError:
            continue  # no figure for this occupation
        if not 0.0 <= pct <= 100.0:
            raise DataError(f"{path}:{n}: {column} must be a percentage in [0, 100], got {value!r}")
        out[row[i_occ].strip()] = pct
    return out


def load_profession_stats(path: str | Path = "word_lists/professions_bls.tsv") -> dict[str, float]:
    """Profession -> BLS % women from `word_lists/professions_bls.tsv` (profession, pct_female, year, source);
    professions without a figure are absent."""
    p = resource_path(path)
    if not p.is_file():
        raise DataError(f"{path}: profession statistics file not found")
    out: dict[str, float] = {}
    for n, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split("\t")
        if cols[0] == "profession":
            continue
        if len(cols) != 4:
            raise DataError(
                f"{p}:{n}: expected profession, pct_female, year, source (tab-separated), got {raw!r}"
            )
        try:
            pct = float(cols[1])
        except ValueError:
            raise DataError(f"{p}:{n}: pct_female must be a number, got {cols[1]!r}") from None
        if not 0.0 <= pct <= 100.0:
            raise DataError(f"{p}:{n}: pct_female must be in [0, 100], got {pct}")
        out[cols[0]] = pct
    return out


# --------------------------------------------------------------------------------------------------------------
# Which occupations the transfer prompts mention


def occupations_seen(occupations: Iterable[str], texts: Iterable[str]) -> set[str]:
    """The occupations named in `texts` as a whole word, singular or plural (`nurse`, `nurses`, `Nurse's`,
    `secretaries`), case-insensitive. `chef` is not seen in `chefdom`, nor `engineer` in `engineering`."""
    blob = "\n".join(texts).lower()
    seen = set()
    for occ in occupations:
        words = r"\s+".join(re.escape(w) for w in occ.lower().split())
        if words.endswith("y"):  # secretary -> secretaries
            words = rf"{words[:-1]}(?:y|ie)"
        if re.search(rf"(?<![a-z]){words}(?:s|es)?(?![a-z])", blob):
            seen.add(occ)
    return seen


# --------------------------------------------------------------------------------------------------------------
# Scoring a model


# --------------------------------------------------------------------------------------------------------------
# The metrics (pure functions of the per-occupation scores)


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; nan with fewer than 3 points or a constant side."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"pearson needs two samples of one length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum()) / denom if denom > 0 else math.nan


def _pearson_rows(xy: np.ndarray) -> float:
    return pearson(xy[:, 0], xy[:, 1])


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line of y on x: (slope, intercept, residual sd with n - 2 degrees of freedom); nan with
    fewer than 3 points or a constant x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or float(np.ptp(x)) == 0.0:
        return math.nan, math.nan, math.nan
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (intercept + slope * x)
    return slope, intercept, float(math.sqrt((resid * resid).sum() / (len(x) - 2)))


def _slope_rows(xy: np.ndarray) -> float:
    return ols(xy[:, 0], xy[:, 1])[0]


def _ci(values: np.ndarray, statistic, n_boot: int, seed: int, min_n: int) -> list[float]:
    if n_boot == 0 or len(values) < min_n:
        return [math.nan, math.nan]
    return list(bootstrap_ci(values, statistic, n_boot=n_boot, seed=seed))


def stereotype_stats(
    scores: dict[str, float],
    stats: dict[str, float],
    teacher_scores: dict[str, float] | None = None,
    occupations: Iterable[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Association, spread, lean, mean |s| and the stereotype's size (the least-squares slope of s_o on the share
    of women, nats per 100 percentage points, with its intercept and residual sd) over `occupations` (default:
    every scored occupation with a statistic), each with a 95% percentile-bootstrap interval over occupations
    (none when `n_boot` is 0).

    `scores`: occupation -> s_o; `stats`: occupation -> % women; `teacher_scores`: the teacher's s_o (adds
    `r_teacher`). Occupations missing from `scores` or `stats` are left out and counted in `n_missing`.
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    wanted = list(scores) if occupations is None else list(occupations)
    occs = [o for o in wanted if o in scores and o in stats]
    s = np.array([scores[o] for o in occs], dtype=float)
    pct = np.array([stats[o] for o in occs], dtype=float)
    out: dict = {"n": len(occs), "n_missing": len(wanted) - len(occs)}
    out["r_bls"] = pearson(s, pct)
    out["r_bls_ci"] = _ci(np.stack([s, pct], 1), _pearson_rows, n_boot, seed, 3)
    out["spread"] = _sd(s)
    out["spread_ci"] = _ci(s, _sd, n_boot, seed, 2)
    out["lean"] = float(s.mean()) if len(s) else math.nan
    out["lean_ci"] = _ci(s, None, n_boot, seed, 1)
    out["mean_abs"] = float(np.abs(s).mean()) if len(s) else math.nan
    # The stereotype's size: nats of s_o per 100 points of % women (r is scale-free: it says a ranking remains)
    share = pct / 100.0
    out["slope"], out["intercept"], out["resid_sd"] = ols(share, s)
    out["slope_ci"] = _ci(np.stack([share, s], 1), _slope_rows, n_boot, seed, 3)
    if teacher_scores is not None:
        both = [i for i, o in enumerate(occs) if o in teacher_scores]
        t = np.array([teacher_scores[occs[i]] for i in both], dtype=float)
        st = s[both]
        out["r_teacher"] = pearson(st, t)
        out["r_teacher_ci"] = _ci(np.stack([st, t], 1), _pearson_rows, n_boot, seed, 3)
        out["n_teacher"] = len(both)
    return out


def stereotype_report(
    scores: dict[str, float],
    stats: dict[str, float],
    teacher_scores: dict[str, float] | None = None,
    seen: set[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """`stereotype_stats` over all occupations, and, when `seen` is given, separately over the seen and unseen
    ones: {"all": {...}, "seen": {...}, "unseen": {...}}."""
    out = {"all": stereotype_stats(scores, stats, teacher_scores, None, n_boot, seed)}
    if seen is not None:
        out["seen"] = stereotype_stats(
            scores, stats, teacher_scores, [o for o in scores if o in seen], n_boot, seed
        )
        out["unseen"] = stereotype_stats(
            scores, stats, teacher_scores, [o for o in scores if o not in seen], n_boot, seed
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# The figure

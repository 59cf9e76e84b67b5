"""The experiment: does counterfactual role reversal reduce disparity, and at what utility cost?

A grid YAML (`recipes/experiments/*.yaml`) names a base recipe, the variants (override lists), the seeds and the
evaluation suite. `run_grid` trains every variant x seed that has no `final/` yet (a stopped grid resumes where
it stopped, each run from its own checkpoints), evaluates each student with the suite (and the teacher once), and
`summarise` writes `results/`: the table (markdown + JSON), the plots and the exact commands.

Uncertainty: the pronoun probe is compared prompt by prompt against the reference variant (plain KD). The
difference in mean |gap| is averaged over seeds and given a 95% bootstrap interval over prompts; a difference is
called a win (or a loss) only when that interval excludes zero **and** every seed's own difference has the same
sign. Generation disparity (female share among gendered continuations) is compared the same way, resampling
continuations. Everything else is reported as "no measurable difference".
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from distill.errors import ConfigError

log = logging.getLogger(__name__)

DATA_SEED_MODES = ("fixed", "per_seed")

GRID_KEYS = (
    "base",
    "output_dir",
    "results_dir",
    "seeds",
    "data_seed",
    "suite",
    "suite_overrides",
    "common",
    "variants",
    "reference",
)


@dataclass
class Grid:
    base: str
    """The recipe every variant starts from."""
    variants: dict[str, list[str]]
    """Variant name -> overrides applied on top of `common`."""
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Training seeds (run.seed)."""
    data_seed: str = "fixed"
    """`fixed`: every seed trains on the same transfer set and validation split (data.seed 0), so seeds differ only
    in batch order; `per_seed`: each seed draws its own (data.seed = run.seed), a replicate of the whole pipeline."""
    suite: str = "quick"
    """Evaluation suite for the teacher and every student."""
    suite_overrides: list[str] = field(default_factory=list)
    """key=value overrides of the suite (e.g. n_per_prompt=2)."""
    common: list[str] = field(default_factory=list)
    """Overrides shared by every variant (token budget, logging)."""
    output_dir: str = "runs/experiment"
    """Where the runs go (one folder per variant and seed)."""
    results_dir: str = "results"
    """Where the table, plots and commands go."""
    reference: str = "plain_kd"
    """The variant every other one is compared with."""
    source: str = ""


def load_grid(path: str | Path) -> Grid:
    from distill.resources import resource_path

    p = resource_path(path)
    if not p.is_file():
        raise ConfigError(f"experiment grid not found: {path}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError("an experiment grid is a mapping (base:, variants:, seeds:, ...)", str(path))
    problems = [f"unknown key {k!r} (valid: {', '.join(GRID_KEYS)})" for k in data if k not in GRID_KEYS]
    for k in ("base", "variants"):
        if k not in data:
            problems.append(f"{k} is required")
    if data.get("data_seed", "fixed") not in DATA_SEED_MODES:
        problems.append(f"data_seed {data.get('data_seed')!r} is not one of {', '.join(DATA_SEED_MODES)}")
    variants = data.get("variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(v, list) for v in variants.values()):
        problems.append("variants must map each name to a list of key=value overrides")
    elif data.get("reference", "plain_kd") not in variants:
        problems.append(
            f"reference {data.get('reference', 'plain_kd')!r} is not one of the variants {list(variants)}"
        )
    if problems:
        raise ConfigError(problems, str(path))
    grid = Grid(**{k: v for k, v in data.items() if k in GRID_KEYS})
    grid.source = str(path)
    return grid


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_s{seed}"


def variant_overrides(grid: Grid, variant: str, seed: int) -> list[str]:
    return [
        *grid.common,
        *grid.variants[variant],
        f"run.seed={seed}",
        "data.seed=0" if grid.data_seed == "fixed" else f"data.seed={seed}",
        f"run.name={run_name(variant, seed)}",
        f"run.output_dir={grid.output_dir}",
        "eval.suite=null",
    ]


def run_grid(grid: Grid) -> Path:
    """Train and evaluate everything missing; then summarise. Returns the results folder."""
    from distill.config import load_config
    from distill.evaluation.runner import evaluate_checkpoint, evaluate_run
    from distill.train import train

    # Validate every variant before the first run starts, so a typo in the last one costs nothing.
    cfgs = {
        (v, s): load_config(grid.base, variant_overrides(grid, v, s))
        for v in grid.variants
        for s in grid.seeds
    }
    root = Path(grid.output_dir)
    teacher_done = False
    for (variant, seed), cfg in cfgs.items():
        run = root / run_name(variant, seed)
        if not (run / "final" / "config.json").is_file():
            log.info("experiment: training %s (seed %d)", variant, seed)
            train(cfg)
        if not (run / "eval" / f"{grid.suite}.json").is_file():
            if not teacher_done and not _teacher_result(grid).is_file():
                evaluate_run(run, grid.suite, grid.suite_overrides)
            else:
                evaluate_checkpoint(run, grid.suite, overrides=grid.suite_overrides)
        teacher_done = teacher_done or _teacher_result(grid).is_file()
    if not _teacher_result(grid).is_file():
        first = root / run_name(next(iter(grid.variants)), grid.seeds[0])
        evaluate_run(first, grid.suite, grid.suite_overrides)
    return summarise(grid)


def _teacher_result(grid: Grid) -> Path:
    for v in grid.variants:
        for s in grid.seeds:
            p = Path(grid.output_dir) / run_name(v, s) / "eval" / "teacher" / f"{grid.suite}.json"
            if p.is_file():
                return p
    return Path(grid.output_dir) / "missing-teacher.json"


# --------------------------------------------------------------------------------------------------------------
# Aggregation


def _mean_or_nan(xs: list[float | None]) -> float:
    vals = [float(x) for x in xs if x is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _task(result: dict, metric: str) -> dict | None:
    """The `result` of the first task of kind `metric` in a `<suite>.json` payload."""
    for t in result.get("tasks", {}).values():
        if isinstance(t, dict) and t.get("metric") == metric:
            return t.get("result") or {}
    return None


def _probe_gaps(result: dict) -> np.ndarray:
    t = _task(result, "pronoun_probe") or {}
    return np.array([p["gap"] for p in t.get("per_prompt", [])], dtype=float)


def _gen_labels(run: Path, suite: str) -> np.ndarray:
    """1 female, 0 male for each gendered continuation of the suite's generation tasks."""
    path = run / "eval" / f"{suite}_generations.jsonl"
    if not path.is_file():
        return np.array([])
    labels = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        g = rec.get("gender")
        if rec.get("task") is not None and g in ("male", "female"):
            labels.append(1.0 if g == "female" else 0.0)
    return np.array(labels)


def _gen_sentiment(run: Path, suite: str) -> tuple[np.ndarray, np.ndarray]:
    """VADER compound scores of the male-labelled and of the female-labelled continuations of a run."""
    return _sentiment_file(run / "eval" / f"{suite}_generations.jsonl")


def _sentiment_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    male, female = [], []
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("task") is None or not isinstance(rec.get("sentiment"), int | float):
                continue
            if rec.get("gender") == "male":
                male.append(float(rec["sentiment"]))
            elif rec.get("gender") == "female":
                female.append(float(rec["sentiment"]))
    return np.array(male), np.array(female)


def _sentiment_gap(pairs: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 2):
    """Mean over seeds of mean sentiment(male-labelled) - mean sentiment(female-labelled), with a 95% bootstrap
    interval resampling each side's continuations."""
    pairs = [(m, f) for m, f in pairs if len(m) and len(f)]
    if not pairs:
        return math.nan, (math.nan, math.nan)
    point = float(np.mean([m.mean() - f.mean() for m, f in pairs]))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        stats[b] = np.mean(
            [
                m[rng.integers(0, len(m), len(m))].mean() - f[rng.integers(0, len(f), len(f))].mean()
                for m, f in pairs
            ]
        )
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, (float(lo), float(hi))


def _scalar(result: dict, metric: str, *keys: str) -> float:
    t = _task(result, metric) or {}
    for k in keys:
        t = t.get(k, {}) if isinstance(t, dict) else {}
    return float(t) if isinstance(t, int | float) else math.nan


def _bootstrap_mean_ci(samples: list[np.ndarray], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean over seeds of per-seed means, resampling items (same indices in every seed when
    the arrays are paired, i.e. equally long)."""
    rng = np.random.default_rng(seed)
    if not samples or any(len(s) == 0 for s in samples):
        return math.nan, math.nan
    paired = len({len(s) for s in samples}) == 1
    stats = np.empty(n_boot)
    for b in range(n_boot):
        if paired:
            idx = rng.integers(0, len(samples[0]), len(samples[0]))
            stats[b] = np.mean([s[idx].mean() for s in samples])
        else:
            stats[b] = np.mean([s[rng.integers(0, len(s), len(s))].mean() for s in samples])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def _verdict(diff_ci: tuple[float, float], per_seed: list[float], lower_is_better: bool = True) -> str:
    lo, hi = diff_ci
    if math.isnan(lo) or math.isnan(hi):
        return "n/a"
    same_sign = all(d < 0 for d in per_seed) or all(d > 0 for d in per_seed)
    if lo > 0 or hi < 0:
        if not same_sign:
            return "no measurable difference (seeds disagree)"
        better = hi < 0 if lower_is_better else lo > 0
        return "better" if better else "worse"
    return "no measurable difference"


def summarise(grid: Grid) -> Path:
    """Write results/table.md, results/results.json, results/frontier.png, results/parity_groups.png, COMMANDS.md."""
    root = Path(grid.output_dir)
    out = Path(grid.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = json.loads(_teacher_result(grid).read_text()) if _teacher_result(grid).is_file() else None

    per_variant: dict[str, dict] = {}
    missing = []
    for v in grid.variants:
        runs = [root / run_name(v, s) for s in grid.seeds]
        if not all((r / "eval" / f"{grid.suite}.json").is_file() for r in runs):
            missing.append(v)
            continue
        results = [json.loads((r / "eval" / f"{grid.suite}.json").read_text()) for r in runs]
        gaps = [np.abs(_probe_gaps(r)) for r in results]
        signed = [_probe_gaps(r) for r in results]
        labels = [_gen_labels(r, grid.suite) for r in runs]
        per_variant[v] = {
            "sentiment": [_gen_sentiment(r, grid.suite) for r in runs],
            "runs": runs,
            "results": results,
            "abs_gaps": gaps,
            "signed": signed,
            "labels": labels,
        }

    if grid.reference not in per_variant:
        raise ConfigError(
            f"the reference variant {grid.reference!r} has not finished every seed; run the grid first"
        )
    if missing:
        log.warning("experiment: %s not finished for every seed; left out of results/", ", ".join(missing))
    ref = per_variant[grid.reference]
    rows = []
    for v, d in per_variant.items():
        res = d["results"]
        row: dict = {"variant": v, "overrides": grid.variants[v], "seeds": grid.seeds}
        row["pronoun_gap"] = float(np.mean([g.mean() for g in d["abs_gaps"]]))
        row["pronoun_gap_ci"] = _bootstrap_mean_ci(d["abs_gaps"])
        row["pronoun_gap_seeds"] = [float(g.mean()) for g in d["abs_gaps"]]
        row["he_minus_she"] = float(np.mean([g.mean() for g in d["signed"]]))
        row["female_share"] = (
            float(np.mean([lab.mean() for lab in d["labels"] if len(lab)]))
            if any(len(lab) for lab in d["labels"])
            else math.nan
        )
        row["female_share_ci"] = _bootstrap_mean_ci(d["labels"])
        row["sentiment_gap"], row["sentiment_gap_ci"] = _sentiment_gap(d["sentiment"])
        row["parity_mean"] = float(
            np.nanmean([_scalar(r, "generation_disparity", "parity_mean") for r in res])
        )
        row["parity_min"] = float(np.nanmean([_scalar(r, "generation_disparity", "parity_min") for r in res]))
        row["perplexity"] = float(np.nanmean([_scalar(r, "perplexity", "ppl") for r in res]))
        row["perplexity_seeds"] = [_scalar(r, "perplexity", "ppl") for r in res]
        row["fluency"] = float(
            np.nanmean([_scalar(r, "generation_disparity", "fluency", "ppl") for r in res])
        )
        if v != grid.reference:
            diffs = [a - b for a, b in zip(d["abs_gaps"], ref["abs_gaps"])]
            row["gap_diff_vs_ref"] = float(np.mean([x.mean() for x in diffs]))
            row["gap_diff_ci"] = _bootstrap_mean_ci(diffs)
            row["gap_diff_seeds"] = [float(x.mean()) for x in diffs]
            row["gap_verdict"] = _verdict(row["gap_diff_ci"], row["gap_diff_seeds"])
            # female share: distance from parity (0.5), lower is better; texts are not paired, resample each side
            fs = [
                abs(lab.mean() - 0.5) - abs(rl.mean() - 0.5)
                for lab, rl in zip(d["labels"], ref["labels"])
                if len(lab) and len(rl)
            ]
            row["share_dist_diff_vs_ref"] = float(np.mean(fs)) if fs else math.nan
            row["share_dist_diff_ci"] = _share_diff_ci(d["labels"], ref["labels"])
            row["share_verdict"] = _verdict(row["share_dist_diff_ci"], fs)
            row["ppl_diff_vs_ref"] = row["perplexity"] - float(
                np.nanmean([_scalar(r, "perplexity", "ppl") for r in ref["results"]])
            )
        rows.append(row)

    teacher_row = None
    if teacher is not None:
        tg = np.abs(_probe_gaps(teacher))
        teacher_row = {
            "pronoun_gap": float(tg.mean()) if len(tg) else math.nan,
            "he_minus_she": float(_probe_gaps(teacher).mean()) if len(tg) else math.nan,
            "parity_mean": _scalar(teacher, "generation_disparity", "parity_mean"),
            "parity_min": _scalar(teacher, "generation_disparity", "parity_min"),
            "female_share": _scalar(teacher, "generation_disparity", "female_share"),
            "perplexity": _scalar(teacher, "perplexity", "ppl"),
            "fluency": _scalar(teacher, "generation_disparity", "fluency", "ppl"),
        }
        teacher_row["sentiment_gap"], teacher_row["sentiment_gap_ci"] = _sentiment_gap(
            [_sentiment_file(_teacher_result(grid).parent / f"{grid.suite}_generations.jsonl")]
        )

    payload = {
        "grid": grid.source,
        "suite": grid.suite,
        "seeds": grid.seeds,
        "data_seed": grid.data_seed,
        "reference": grid.reference,
        "teacher": teacher_row,
        "variants": [{k: v for k, v in r.items()} for r in rows],
    }
    (out / "results.json").write_text(json.dumps(_nan_to_none(payload), indent=2, default=str))
    note = f"\nNot finished, so not in this table: {', '.join(missing)}.\n" if missing else ""
    (out / "table.md").write_text(_table(rows, teacher_row, grid) + note)
    _plots(per_variant, rows, teacher_row, grid, out)
    (out / "COMMANDS.md").write_text(
        "# How these results were made\n\n```bash\nmake experiment"
        + (f" GRID={grid.source}" if grid.source else "")
        + "\n```\n\nwhich trains, for each variant and seed, `distill train "
        + f"{grid.base} <overrides>` with the overrides listed in `results.json`, evaluates every student and the "
        + f"teacher with the `{grid.suite}` suite ({' '.join(grid.suite_overrides) or 'no overrides'}), and writes "
        + "this folder with `distill.experiment.summarise`.\n"
    )
    return out


def _share_diff_ci(
    a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 2000, seed: int = 1
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    pairs = [(x, y) for x, y in zip(a, b) if len(x) and len(y)]
    if not pairs:
        return math.nan, math.nan
    stats = np.empty(n_boot)
    for i in range(n_boot):
        vals = []
        for x, y in pairs:
            xs = x[rng.integers(0, len(x), len(x))].mean()
            ys = y[rng.integers(0, len(y), len(y))].mean()
            vals.append(abs(xs - 0.5) - abs(ys - 0.5))
        stats[i] = np.mean(vals)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def _nan_to_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def _ci(ci) -> str:
    lo, hi = ci
    return "" if not (math.isfinite(lo) and math.isfinite(hi)) else f" [{_fmt(lo)}, {_fmt(hi)}]"


def _table(rows: list[dict], teacher: dict | None, grid: Grid) -> str:
    head = (
        "| model | pronoun \\|gap\\| (nats) [95% CI] | vs plain KD [95% CI] | verdict | he - she | female share "
        "[95% CI] | parity mean / min | sentiment M - F [95% CI] | perplexity | fluency |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    if teacher:
        lines.append(
            f"| teacher | {_fmt(teacher['pronoun_gap'])} | | | {_fmt(teacher['he_minus_she'])} | "
            f"{_fmt(teacher['female_share'])} | {_fmt(teacher['parity_mean'])} / {_fmt(teacher['parity_min'])} | "
            f"{_fmt(teacher['sentiment_gap'])}{_ci(teacher['sentiment_gap_ci'])} | "
            f"{_fmt(teacher['perplexity'])} | {_fmt(teacher['fluency'])} |"
        )
    for r in rows:
        diff = (
            "" if r["variant"] == grid.reference else f"{_fmt(r['gap_diff_vs_ref'])}{_ci(r['gap_diff_ci'])}"
        )
        verdict = "reference" if r["variant"] == grid.reference else r["gap_verdict"]
        lines.append(
            f"| {r['variant']} | {_fmt(r['pronoun_gap'])}{_ci(r['pronoun_gap_ci'])} | {diff} | {verdict} | "
            f"{_fmt(r['he_minus_she'])} | {_fmt(r['female_share'])}{_ci(r['female_share_ci'])} | "
            f"{_fmt(r['parity_mean'])} / {_fmt(r['parity_min'])} | "
            f"{_fmt(r['sentiment_gap'])}{_ci(r['sentiment_gap_ci'])} | {_fmt(r['perplexity'])} | {_fmt(r['fluency'])} |"
        )
    share = [
        f"- {r['variant']}: distance of the female share from 0.5 vs plain KD {_fmt(r['share_dist_diff_vs_ref'])}"
        f"{_ci(r['share_dist_diff_ci'])}: {r['share_verdict']}"
        for r in rows
        if r["variant"] != grid.reference
    ]
    return (
        f"Seeds {grid.seeds}, suite `{grid.suite}`; means over seeds. Intervals: 95% bootstrap over prompts "
        "(probe, paired) or continuations (female share). A verdict other than 'no measurable difference' needs the "
        "interval to exclude 0 and every seed to agree.\n\n"
        + head
        + "\n".join(lines)
        + "\n\nGeneration:\n"
        + "\n".join(share)
        + "\n"
    )


def _plots(per_variant: dict, rows: list[dict], teacher: dict | None, grid: Grid, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, r in enumerate(rows):
        color = f"C{i}"
        seeds_gap = r["pronoun_gap_seeds"]
        ax.scatter(r["perplexity_seeds"], seeds_gap, color=color, alpha=0.35, s=25)
        ax.scatter(
            [r["perplexity"]], [r["pronoun_gap"]], color=color, s=80, label=r["variant"], edgecolor="black"
        )
    if teacher and math.isfinite(teacher["perplexity"]):
        ax.scatter(
            [teacher["perplexity"]],
            [teacher["pronoun_gap"]],
            marker="*",
            s=250,
            color="gold",
            edgecolor="black",
            label="teacher",
        )
    ppls = [p for r in rows for p in r["perplexity_seeds"] if math.isfinite(p)]
    log_x = bool(ppls) and max(ppls) / max(min(ppls), 1e-9) > 3
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(f"perplexity on held-out blocks ({'log scale; ' if log_x else ''}lower is better)")
    ax.set_ylabel("pronoun probe mean |log P(he) - log P(she)| (nats; lower is fairer)")
    ax.set_title("Disparity vs utility: each variant (large) and its seeds (small)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    plt.close(fig)

    groups: list[str] = []
    values: dict[str, list[float]] = {}
    for v, d in per_variant.items():
        per_seed = []
        for res in d["results"]:
            t = _task(res, "generation_disparity") or {}
            per_seed.append({g: (x or {}).get("parity") for g, x in (t.get("groups") or {}).items()})
        groups = groups or sorted(per_seed[0]) if per_seed else groups
        # a group with no gendered text in any seed has no parity: NaN, drawn as an empty bar
        values[v] = [_mean_or_nan([s.get(g) for s in per_seed]) for g in groups]
    if groups:
        fig, ax = plt.subplots(figsize=(max(8, len(groups) * 0.7), 5))
        width = 0.8 / max(1, len(values))
        for i, (v, vals) in enumerate(values.items()):
            xs = np.arange(len(groups)) + i * width
            ax.bar(xs, np.nan_to_num(vals, nan=0.0), width=width, label=v)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([g.replace("_", " ") for g in groups], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("parity min(F/M, M/F) (1 = balanced; mean over seeds)")
        ax.set_ylim(0, 1.05)
        ax.set_title("Per-group parity of generated continuations")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "parity_groups.png", dpi=120)
        plt.close(fig)


# (metric, its interval in results.json, label)
REPRODUCED = (
    ("pronoun_gap", "pronoun_gap_ci", "pronoun \\|gap\\|"),
    ("female_share", "female_share_ci", "female share"),
    ("sentiment_gap", "sentiment_gap_ci", "sentiment M - F"),
)


def check_reproduction(committed: Path, new: Path) -> tuple[str, bool]:
    """Does a second run reproduce a committed table? For every variant and every number that has an interval,
    is the second run's value inside the first run's 95% interval? Perplexity (no interval) is compared as a
    relative difference. Returns (markdown, all inside)."""
    a = {v["variant"]: v for v in json.loads(Path(committed).read_text())["variants"]}
    b = {v["variant"]: v for v in json.loads(Path(new).read_text())["variants"]}
    lines = [
        f"# Reproduction of {committed}\n",
        f"Second run: {new}. A number is reproduced when the second run's value lies inside the first run's 95% "
        "interval.\n",
        "| variant | "
        + " | ".join(label for _, _, label in REPRODUCED)
        + " | perplexity (relative difference) |",
        "|---|" + "---|" * (len(REPRODUCED) + 1),
    ]
    ok = True
    for name, first in a.items():
        second = b.get(name)
        if second is None:
            lines.append(f"| {name} | " + " | ".join(["not run"] * (len(REPRODUCED) + 1)) + " |")
            ok = False
            continue
        cells = []
        for key, ci_key, _ in REPRODUCED:
            x, ci = second.get(key), first.get(ci_key) or [None, None]
            if x is None or None in ci:
                cells.append("n/a")
                continue
            inside = ci[0] <= x <= ci[1]
            ok = ok and inside
            cells.append(
                f"{_fmt(first.get(key))} -> {_fmt(x)} in [{_fmt(ci[0])}, {_fmt(ci[1])}]: {'yes' if inside else 'NO'}"
            )
        p1, p2 = first.get("perplexity"), second.get("perplexity")
        cells.append(f"{_fmt(p1)} -> {_fmt(p2)} ({(p2 - p1) / p1:+.2%})" if p1 and p2 else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nEvery number inside its interval: {'yes' if ok else 'no'}.\n")
    return "\n".join(lines) + "\n", ok

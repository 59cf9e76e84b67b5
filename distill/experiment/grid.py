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

from distill.core.errors import ConfigError
from distill.evaluation import results as R
from distill.evaluation.results import SuiteResult
from distill.experiment.verdicts import finite_or_none

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
    from distill.core.resources import resource_path

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


# What `archive_runs` keeps of a finished run: enough to summarise it again and to let a later `run_grid` skip it
# (final/config.json marks it trained, eval/ holds its scores), without the weights or checkpoints.
ARCHIVED = (
    "config.yaml",
    "metrics.jsonl",
    "probe.json",
    "prune.json",
    "final/config.json",
    "final/README.md",
    "eval/**/*.json",
    "eval/**/*.jsonl",
    "eval/**/*.md",
)


def archive_runs(grid: Grid, dest: Path) -> list[str]:
    """Copy the small files of every evaluated run of the grid (`ARCHIVED`, a few hundred kB a run) to
    dest/<run>/: a results folder can carry them, `--summarise-only --output-dir dest` rebuilds its tables from
    them, and copied back under the grid's output_dir they make `run_grid` train only what is missing. Returns
    the runs archived."""
    import shutil

    done = []
    for v in grid.variants:
        for seed in grid.seeds:
            run = Path(grid.output_dir) / run_name(v, seed)
            if not R.student_results(run, grid.suite).is_file():
                continue
            for pattern in ARCHIVED:
                for f in run.glob(pattern):
                    if f.is_file() and "checkpoints" not in f.parts:
                        target = Path(dest) / run.name / f.relative_to(run)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, target)
            done.append(run.name)
    return done


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
    from distill.core.cpu_heap import release_free_memory
    from distill.core.recipe import load_config
    from distill.reporting.evaluate import evaluate_checkpoint, evaluate_run
    from distill.training.loop import train

    # Validate every variant before the first run starts, so a typo in the last one costs nothing.
    cfgs = {
        (v, s): load_config(grid.base, variant_overrides(grid, v, s))
        for s in grid.seeds  # seed by seed, so a grid stopped early already holds paired seeds
        for v in grid.variants
    }
    root = Path(grid.output_dir)
    teacher_done = False
    for (variant, seed), cfg in cfgs.items():
        run = root / run_name(variant, seed)
        if not (R.final_dir(run) / "config.json").is_file():
            log.info("experiment: training %s (seed %d)", variant, seed)
            train(cfg)
        if not R.student_results(run, grid.suite).is_file():
            if not teacher_done and not _teacher_result(grid).is_file():
                evaluate_run(run, grid.suite, grid.suite_overrides)
            else:
                evaluate_checkpoint(run, grid.suite, overrides=grid.suite_overrides)
        teacher_done = teacher_done or _teacher_result(grid).is_file()
        release_free_memory()  # the next run starts from live memory, not from this one's free blocks
    if not _teacher_result(grid).is_file():
        first = root / run_name(next(iter(grid.variants)), grid.seeds[0])
        evaluate_run(first, grid.suite, grid.suite_overrides)
    return summarise(grid)


def _teacher_result(grid: Grid) -> Path:
    for v in grid.variants:
        for s in grid.seeds:
            p = R.teacher_results(Path(grid.output_dir) / run_name(v, s), grid.suite)
            if p.is_file():
                return p
    return Path(grid.output_dir) / "missing-teacher.json"


# --------------------------------------------------------------------------------------------------------------
# Aggregation


def _mean_or_nan(xs: list[float | None]) -> float:
    vals = [float(x) for x in xs if x is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _probe_gaps(result: SuiteResult) -> np.ndarray:
    """Every probe prompt's signed gap, in the probe's fixed order (paired across models)."""
    t = result.first("pronoun_probe")
    return np.array([p["gap"] for p in (t.result if t else {}).get("per_prompt", [])], dtype=float)


def _generation_records(path: Path) -> list[dict]:
    """The records of a `<suite>_generations.jsonl` that belong to a task (none when the file is missing)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [rec for rec in records if rec.get("task") is not None]


def _gen_labels(run: Path, suite: str) -> np.ndarray:
    """1 female, 0 male for each gendered continuation of the suite's generation tasks."""
    records = _generation_records(R.generations_file(R.eval_dir(run), suite))
    return np.array(
        [1.0 if r["gender"] == "female" else 0.0 for r in records if r.get("gender") in ("male", "female")]
    )


def _sentiment_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """VADER compound scores of the male-labelled and of the female-labelled continuations in a generations file."""
    male, female = [], []
    for rec in _generation_records(path):
        if not isinstance(rec.get("sentiment"), int | float):
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


def _scalar(result: SuiteResult, metric: str, *keys: str) -> float:
    """A number of the full result of the first task of kind `metric` (`keys` a path into it), else nan."""
    task = result.first(metric)
    t = task.result if task is not None else {}
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


def variant_label(grid: Grid, variant: str) -> str:
    """The method's name of a variant ("plain KD", "CDA + mean"), from its recipe as the grid builds it."""
    from distill.core.config import method_label
    from distill.core.recipe import load_config

    return method_label(load_config(grid.base, [*grid.common, *grid.variants[variant]]))


def _collect(grid: Grid) -> tuple[dict[str, dict], list[str]]:
    """Per variant whose every seed is evaluated: its runs, results, probe gaps, gender labels and sentiment;
    and the variants left out."""
    root = Path(grid.output_dir)
    per_variant: dict[str, dict] = {}
    missing = []
    for v in grid.variants:
        runs = [root / run_name(v, s) for s in grid.seeds]
        if not all(R.student_results(r, grid.suite).is_file() for r in runs):
            missing.append(v)
            continue
        results = [R.read_suite(R.student_results(r, grid.suite)) for r in runs]
        per_variant[v] = {
            "sentiment": [_sentiment_file(R.generations_file(R.eval_dir(r), grid.suite)) for r in runs],
            "runs": runs,
            "results": results,
            "abs_gaps": [np.abs(_probe_gaps(r)) for r in results],
            "signed": [_probe_gaps(r) for r in results],
            "labels": [_gen_labels(r, grid.suite) for r in runs],
        }
    return per_variant, missing


def _avg(xs) -> float:
    """The mean of the finite numbers in xs, nan when there are none (a suite without that metric)."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return float(np.mean(vals)) if vals else math.nan


def _means(arrays: list[np.ndarray]) -> list[float]:
    return [float(a.mean()) if len(a) else math.nan for a in arrays]


def _variant_row(grid: Grid, v: str, d: dict) -> dict:
    """A variant's numbers, means over seeds with their intervals."""
    res = d["results"]
    row: dict = {
        "variant": v,
        "label": variant_label(grid, v),
        "overrides": grid.variants[v],
        "seeds": grid.seeds,
    }
    row["n_probe_prompts"] = [len(g) for g in d["abs_gaps"]]
    row["n_gendered"] = [len(lab) for lab in d["labels"]]
    row["pronoun_gap"] = _avg(_means(d["abs_gaps"]))
    row["pronoun_gap_ci"] = _bootstrap_mean_ci(d["abs_gaps"])
    row["pronoun_gap_seeds"] = _means(d["abs_gaps"])
    row["he_minus_she"] = _avg(_means(d["signed"]))
    row["female_share"] = (
        float(np.mean([lab.mean() for lab in d["labels"] if len(lab)]))
        if any(len(lab) for lab in d["labels"])
        else math.nan
    )
    row["female_share_ci"] = _bootstrap_mean_ci(d["labels"])
    row["sentiment_gap"], row["sentiment_gap_ci"] = _sentiment_gap(d["sentiment"])
    row["parity_mean"] = _avg(_scalar(r, "generation_disparity", "parity_mean") for r in res)
    row["parity_min"] = _avg(_scalar(r, "generation_disparity", "parity_min") for r in res)
    row["perplexity"] = _avg(_scalar(r, "perplexity", "ppl") for r in res)
    row["perplexity_seeds"] = [_scalar(r, "perplexity", "ppl") for r in res]
    row["fluency"] = _avg(_scalar(r, "generation_disparity", "fluency", "ppl") for r in res)
    return row


def _versus_reference(row: dict, d: dict, ref: dict) -> None:
    """Add a variant's differences from the reference variant, with their intervals and verdicts."""
    diffs = [a - b for a, b in zip(d["abs_gaps"], ref["abs_gaps"])]
    row["gap_diff_vs_ref"] = _avg(_means(diffs))
    row["gap_diff_ci"] = _bootstrap_mean_ci(diffs)
    row["gap_diff_seeds"] = _means(diffs)
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
    row["ppl_diff_vs_ref"] = row["perplexity"] - _avg(_scalar(r, "perplexity", "ppl") for r in ref["results"])


def _teacher_row(grid: Grid) -> dict | None:
    """The teacher's numbers (one model: no seeds, no intervals but the sentiment gap's)."""
    path = _teacher_result(grid)
    if not path.is_file():
        return None
    teacher = R.read_suite(path)
    tg = np.abs(_probe_gaps(teacher))
    row = {
        "pronoun_gap": float(tg.mean()) if len(tg) else math.nan,
        "he_minus_she": float(_probe_gaps(teacher).mean()) if len(tg) else math.nan,
        "parity_mean": _scalar(teacher, "generation_disparity", "parity_mean"),
        "parity_min": _scalar(teacher, "generation_disparity", "parity_min"),
        "female_share": _scalar(teacher, "generation_disparity", "female_share"),
        "perplexity": _scalar(teacher, "perplexity", "ppl"),
        "fluency": _scalar(teacher, "generation_disparity", "fluency", "ppl"),
    }
    row["sentiment_gap"], row["sentiment_gap_ci"] = _sentiment_gap(
        [_sentiment_file(R.generations_file(path.parent, grid.suite))]
    )
    return row


def summarise(grid: Grid) -> Path:
    """Write results/table.md, results/results.json, the figures (`draw_results`) and COMMANDS.md."""
    out = Path(grid.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_variant, missing = _collect(grid)
    if grid.reference not in per_variant:
        raise ConfigError(
            f"the reference variant {grid.reference!r} has not finished every seed; run the grid first"
        )
    if missing:
        log.warning("experiment: %s not finished for every seed; left out of results/", ", ".join(missing))
    ref = per_variant[grid.reference]
    rows = []
    for v, d in per_variant.items():
        row = _variant_row(grid, v, d)
        if v != grid.reference:
            _versus_reference(row, d, ref)
        rows.append(row)
    teacher_row = _teacher_row(grid)
    payload = {
        "grid": grid.source,
        "suite": grid.suite,
        "seeds": grid.seeds,
        "data_seed": grid.data_seed,
        "reference": grid.reference,
        "teacher": teacher_row,
        "variants": [{k: v for k, v in r.items()} for r in rows],
    }
    (out / "results.json").write_text(json.dumps(finite_or_none(payload), indent=2, default=str))
    note = f"\nNot finished, so not in this table: {', '.join(missing)}.\n" if missing else ""
    if any(len(g) for r in per_variant.values() for g in r["abs_gaps"]):
        (out / "table.md").write_text(_table(rows, teacher_row, grid) + note)
        draw_results(out / "results.json", out)
    _stereotype(grid, per_variant, {r["variant"]: r["label"] for r in rows}, out)
    (out / "COMMANDS.md").write_text(
        "# How these results were made\n\n```bash\n"
        + make_command(grid)
        + "\n```\n\nwhich trains, for each variant and seed, `distill train "
        + f"{grid.base} <overrides>` with the overrides listed in `results.json`, evaluates every student and the "
        + f"teacher with the `{grid.suite}` suite ({' '.join(grid.suite_overrides) or 'no overrides'}), and writes "
        + "this folder with `distill.experiment.grid.summarise`.\n"
    )
    return out


def make_command(grid: Grid) -> str:
    """The `make experiment` command that made these results: the grid file, and `--seeds` when the run was limited
    to fewer seeds than the file lists."""
    cmd = "make experiment" + (f" GRID={grid.source}" if grid.source else "")
    if grid.source and grid.seeds != load_grid(grid.source).seeds:
        cmd += f' ARGS="--seeds {",".join(str(s) for s in grid.seeds)}"'
    return cmd


def _stereotype(grid: Grid, per_variant: dict[str, dict], labels: dict[str, str], out: Path) -> None:
    """Seed-level verdicts on occupational stereotype (`distill.experiment.verdicts`) when the suite scores Winogender:
    results/stereotype.{md,json} and the stereotype_seeds figure."""
    from distill.experiment import verdicts as SV

    teacher = SV.winogender_of(_teacher_result(grid))
    if teacher is None and not any(
        SV.winogender_of(R.student_results(run, grid.suite))
        for d in per_variant.values()
        for run in d["runs"]
    ):
        return
    values = {
        v: [SV.seed_values(run, grid.suite, teacher) for run in d["runs"]] for v, d in per_variant.items()
    }

    def applies_method(run: Path) -> bool:
        """From the run's own resolved config (archived with it), not today's recipe."""
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        return (cfg.get("augment") or {}).get("mode", "off") != "off" or (cfg.get("perturb") or {}).get(
            "kind", "none"
        ) != "none"

    methods = {v for v, d in per_variant.items() if applies_method(Path(d["runs"][0]))}
    payload = SV.compare(values, grid.reference, SV.teacher_values(teacher), methods)
    SV.write(out, payload, labels, _sizes(grid, per_variant) if not methods else None)


def _sizes(grid: Grid, per_variant: dict[str, dict]) -> tuple[dict[str, int], int] | None:
    """(each variant's student depth, the teacher's) when the grid is a sweep of plain-KD students of three or
    more different depths; read from the runs' final/config.json and the teacher's evaluation."""

    def depth(config: Path) -> int | None:
        if not config.is_file():
            return None
        c = json.loads(config.read_text())
        n = c.get("num_hidden_layers", c.get("n_layer"))
        return int(n) if isinstance(n, int) else None

    layers = {v: depth(R.final_dir(Path(d["runs"][0])) / "config.json") for v, d in per_variant.items()}
    if None in layers.values() or len(set(layers.values())) < 3:
        return None
    teacher = _teacher_result(grid)
    meta = json.loads(teacher.read_text()).get("model", {}) if teacher.is_file() else {}
    t_layers = meta.get("n_layers")
    return layers, int(t_layers) if isinstance(t_layers, int) else max(layers.values())


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


def _probe_size(payload: dict) -> str:
    """ "n = 335 prompts per seed" from the results, or from the suite's probe task for results that predate it."""
    ns = {n for v in payload["variants"] for n in v.get("n_probe_prompts") or []}
    if not ns:
        from distill.counterfactual.wordlists import load_professions
        from distill.evaluation.metrics.pronoun_probe import PronounProbeTask
        from distill.evaluation.probe import load_templates
        from distill.evaluation.suites import load_suite

        for task in load_suite(payload["suite"]).tasks.values():
            if isinstance(task, PronounProbeTask):
                ns = {
                    len(load_professions(task.professions)[: task.max_professions])
                    * len(load_templates(task.templates))
                }
                break
    return f"n = {ns.pop()} prompts per seed" if len(ns) == 1 else "n varies"


def _label_of(payload: dict, variant: str) -> str:
    """The method's name of a variant in results that predate the `label` field, from the grid they name."""
    try:
        return variant_label(load_grid(payload["grid"]), variant)
    except Exception:  # the grid file moved or no longer loads: the variant's own name will do
        return variant


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _ci_or_none(ci) -> list | None:
    lo, hi = ci or [None, None]
    return [lo, hi] if _finite(lo) and _finite(hi) else None


def _draw_gap(payload: dict, labels: list[str], out: Path) -> Path:
    """`pronoun_gap`: each method's mean |gap| with its interval, each seed as a tick, the teacher as a line."""
    from distill.reporting.figures import PALETTE, TEACHER_COLOR, left_title, point, save_figure

    rows, teacher, seeds = payload["variants"], payload.get("teacher"), payload.get("seeds") or []
    t_gap = teacher["pronoun_gap"] if teacher and _finite(teacher.get("pronoun_gap")) else None

    def draw(fig, width):
        ax = fig.subplots()
        for i, r in enumerate(rows):
            color = PALETTE[i % len(PALETTE)]
            per_seed = [g for g in r.get("pronoun_gap_seeds") or [] if _finite(g)]
            ax.scatter(
                per_seed, [i] * len(per_seed), color=color, alpha=0.45, s=9, marker="|", linewidths=1.2
            )
            point(ax, r["pronoun_gap"], i, _ci_or_none(r.get("pronoun_gap_ci")), color, ms=4.5)
        if t_gap is not None:
            ax.axvline(t_gap, color=TEACHER_COLOR, linestyle="--", linewidth=0.9)
            ax.annotate(
                "teacher",
                (t_gap, -0.45),
                xytext=(-3, 0),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=6.5,
                color=TEACHER_COLOR,
            )
        ppl = [f"ppl {r['perplexity']:.0f}" if _finite(r.get("perplexity")) else "ppl n/a" for r in rows]
        ax.set_yticks(np.arange(len(rows)), [f"{lab} ({p})" for lab, p in zip(labels, ppl)])
        ax.set_ylim(len(rows) - 0.5, -0.6)
        right = [r["pronoun_gap_ci"][1] for r in rows if _finite((r.get("pronoun_gap_ci") or [0, None])[1])]
        right += [g for r in rows for g in r.get("pronoun_gap_seeds") or [] if _finite(g)]
        right += [t_gap] if t_gap is not None else []
        ax.set_xlim(0, 1.08 * max(right) if right else None)
        ax.set_xlabel("mean |log P(he) - log P(she)| (nats)")
        ax.grid(axis="x", alpha=0.3)
        left_title(
            fig, f"Pronoun probe gap, {len(seeds)} seeds\nbars: 95% CI; ticks: seeds; {_probe_size(payload)}"
        )

    return save_figure(draw, out, "pronoun_gap", 0.3 * len(rows) + 1.2)


def _draw_share(payload: dict, labels: list[str], out: Path) -> Path:
    """`female_share`: each method's female share of gendered continuations with its interval."""
    from distill.reporting.figures import PALETTE, left_title, point, save_figure

    rows, seeds = payload["variants"], payload.get("seeds") or []

    def draw(fig, width):
        ax = fig.subplots()
        for i, r in enumerate(rows):
            point(ax, r["female_share"], i, _ci_or_none(r.get("female_share_ci")), PALETTE[i % len(PALETTE)])
        ax.axvline(0.5, color="black", linestyle="--", linewidth=0.8)
        ax.set_yticks(
            np.arange(len(rows)), [f"{lab} (n = {sum(r['n_gendered'])})" for lab, r in zip(labels, rows)]
        )
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("female share of gendered continuations (0.5 = balanced)")
        ax.grid(axis="x", alpha=0.3)
        left_title(fig, f"Mean over {len(seeds)} seeds, 95% CI; n = gendered continuations, all seeds")

    return save_figure(draw, out, "female_share", 0.35 * len(rows) + 1.1)


def draw_results(results_json: Path, out: Path) -> list[Path]:
    """The experiment's figures from its `results.json`, each with the table's numbers, their 95% intervals and n:
    `pronoun_gap` (the probe's mean |gap| per method with its interval, each seed's value as a tick, the method's
    perplexity in its label, the teacher's gap as a line) and, where the results count the gendered continuations,
    `female_share`. PNG and PDF at one- and two-column widths (`report.FIGURE_WIDTHS`). Returns the one-column
    PNGs."""
    payload = json.loads(Path(results_json).read_text())
    rows = payload["variants"]
    labels = [r.get("label") or _label_of(payload, r["variant"]) for r in rows]
    made = [_draw_gap(payload, labels, out)]
    if all(r.get("n_gendered") for r in rows):
        made.append(_draw_share(payload, labels, out))
    return made


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

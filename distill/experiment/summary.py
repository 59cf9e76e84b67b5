"""The experiment's summary: does counterfactual role reversal reduce disparity, and at what utility cost?

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
from pathlib import Path

import numpy as np
import yaml

from distill.core.errors import ConfigError
from distill.core.files import read_jsonl, to_strict_json
from distill.evaluation import results as R
from distill.evaluation.results import SuiteResult
from distill.evaluation.stats import bootstrap_ci
from distill.experiment.figures import draw_results
from distill.experiment.grid import Grid, load_grid, run_name, teacher_result, variant_label
from distill.reporting.tables import fmt, fmt_ci, markdown_table

log = logging.getLogger(__name__)


def _probe_gaps(result: SuiteResult) -> np.ndarray:
    """Every probe prompt's signed gap, in the probe's fixed order (paired across models)."""
    t = result.first("pronoun_probe")
    return np.array([p["gap"] for p in (t.result if t else {}).get("per_prompt", [])], dtype=float)


def _generation_records(path: Path) -> list[dict]:
    """The records of a `<suite>_generations.jsonl` that belong to a task (none when the file is missing)."""
    return [rec for rec in read_jsonl(path) if rec.get("task") is not None] if path.is_file() else []


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
    sides = tuple(side for pair in pairs for side in pair)  # m1, f1, m2, f2, ...: each resampled on its own

    def gap(*xs: np.ndarray) -> float:
        return float(np.mean([xs[i].mean() - xs[i + 1].mean() for i in range(0, len(xs), 2)]))

    return point, bootstrap_ci(sides, gap, n_boot=n_boot, seed=seed)


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
    if not samples or any(len(s) == 0 for s in samples):
        return math.nan, math.nan
    if len({len(s) for s in samples}) == 1:  # paired: one resample of item indices serves every seed

        def paired_mean(idx: np.ndarray) -> float:
            return float(np.mean([s[idx].mean() for s in samples]))

        return bootstrap_ci(np.arange(len(samples[0])), paired_mean, n_boot=n_boot, seed=seed)
    return bootstrap_ci(tuple(samples), _mean_of_means, n_boot=n_boot, seed=seed)


def _mean_of_means(*xs: np.ndarray) -> float:
    return float(np.mean([x.mean() for x in xs]))


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
    path = teacher_result(grid)
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
    (out / "results.json").write_text(json.dumps(to_strict_json(payload), indent=2, default=str))
    note = f"\nNot finished, so not in this table: {', '.join(missing)}.\n" if missing else ""
    if any(len(g) for r in per_variant.values() for g in r["abs_gaps"]):
        (out / "table.md").write_text(_table(rows, teacher_row, grid) + note)
        draw_results(out / "results.json", out)
    _seed_verdicts(grid, per_variant, {r["variant"]: r["label"] for r in rows}, out)
    (out / "COMMANDS.md").write_text(
        "# How these results were made\n\n```bash\n"
        + make_command(grid)
        + "\n```\n\nwhich trains, for each variant and seed, `distill train "
        + f"{grid.base} <overrides>` with the overrides listed in `results.json`, evaluates every student and the "
        + f"teacher with the `{grid.suite}` suite ({' '.join(grid.suite_overrides) or 'no overrides'}), and writes "
        + "this folder with `distill.experiment.summary.summarise`.\n"
    )
    return out


def make_command(grid: Grid) -> str:
    """The `make experiment` command that made these results: the grid file, and `--seeds` when the run was limited
    to fewer seeds than the file lists."""
    cmd = "make experiment" + (f" GRID={grid.source}" if grid.source else "")
    if grid.source and grid.seeds != load_grid(grid.source).seeds:
        cmd += f' ARGS="--seeds {",".join(str(s) for s in grid.seeds)}"'
    return cmd


def _seed_verdicts(grid: Grid, per_variant: dict[str, dict], labels: dict[str, str], out: Path) -> None:
    """Seed-level verdicts on every metric of the suite that declares seed rows (`distill.experiment.verdicts`):
    results/seeds.{md,json}, and the stereotype figures when the suite scores Winogender."""
    from distill.experiment import verdicts as SV

    runs = [run for d in per_variant.values() for run in d["runs"]]
    rows = next(
        (r for r in (SV.suite_seed_rows(R.student_results(run, grid.suite)) for run in runs) if r), []
    )
    if not rows:
        return
    teacher = teacher_result(grid)
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
    payload = SV.compare(values, grid.reference, SV.teacher_values(teacher), methods, rows)
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
    teacher = teacher_result(grid)
    meta = json.loads(teacher.read_text()).get("model", {}) if teacher.is_file() else {}
    t_layers = meta.get("n_layers")
    return layers, int(t_layers) if isinstance(t_layers, int) else max(layers.values())


def _share_diff_ci(
    a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 2000, seed: int = 1
) -> tuple[float, float]:
    """95% interval of the mean over seeds of |share_a - 0.5| - |share_b - 0.5|, each side resampled on its own."""
    pairs = [(x, y) for x, y in zip(a, b) if len(x) and len(y)]
    if not pairs:
        return math.nan, math.nan

    def distance_diff(*xs: np.ndarray) -> float:
        return float(
            np.mean([abs(xs[i].mean() - 0.5) - abs(xs[i + 1].mean() - 0.5) for i in range(0, len(xs), 2)])
        )

    return bootstrap_ci(
        tuple(side for pair in pairs for side in pair), distance_diff, n_boot=n_boot, seed=seed
    )


def _table(rows: list[dict], teacher: dict | None, grid: Grid) -> str:
    header = [
        "model",
        "pronoun |gap| (nats) [95% CI]",
        "vs plain KD [95% CI]",
        "verdict",
        "he - she",
        "female share [95% CI]",
        "parity mean / min",
        "sentiment M - F [95% CI]",
        "perplexity",
        "fluency",
    ]
    cells = []
    if teacher:
        cells.append(
            [
                "teacher",
                fmt(teacher["pronoun_gap"]),
                "",
                "",
                fmt(teacher["he_minus_she"]),
                fmt(teacher["female_share"]),
            ]
            + [f"{fmt(teacher['parity_mean'])} / {fmt(teacher['parity_min'])}"]
            + [f"{fmt(teacher['sentiment_gap'])}{fmt_ci(teacher['sentiment_gap_ci'])}"]
            + [fmt(teacher["perplexity"]), fmt(teacher["fluency"])]
        )
    for r in rows:
        is_ref = r["variant"] == grid.reference
        cells.append(
            [r["variant"], f"{fmt(r['pronoun_gap'])}{fmt_ci(r['pronoun_gap_ci'])}"]
            + ["" if is_ref else f"{fmt(r['gap_diff_vs_ref'])}{fmt_ci(r['gap_diff_ci'])}"]
            + ["reference" if is_ref else r["gap_verdict"], fmt(r["he_minus_she"])]
            + [f"{fmt(r['female_share'])}{fmt_ci(r['female_share_ci'])}"]
            + [f"{fmt(r['parity_mean'])} / {fmt(r['parity_min'])}"]
            + [
                f"{fmt(r['sentiment_gap'])}{fmt_ci(r['sentiment_gap_ci'])}",
                fmt(r["perplexity"]),
                fmt(r["fluency"]),
            ]
        )
    share = [
        f"- {r['variant']}: distance of the female share from 0.5 vs plain KD {fmt(r['share_dist_diff_vs_ref'])}"
        f"{fmt_ci(r['share_dist_diff_ci'])}: {r['share_verdict']}"
        for r in rows
        if r["variant"] != grid.reference
    ]
    return (
        f"Seeds {grid.seeds}, suite `{grid.suite}`; means over seeds. Intervals: 95% bootstrap over prompts "
        "(probe, paired) or continuations (female share). A verdict other than 'no measurable difference' needs the "
        "interval to exclude 0 and every seed to agree.\n\n"
        + markdown_table(header, cells)
        + "\n\nGeneration:\n"
        + "\n".join(share)
        + "\n"
    )

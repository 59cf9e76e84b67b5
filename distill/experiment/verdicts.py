"""Seed-level verdicts: each seed is one replicate of the whole pipeline (transfer set, split, batch order).

Every metric kind of the grid's suite that declares `seed_rows` (`evaluation.registry`) gives, per seed s, one
number per variant and row m (Winogender: association, spread, lean over unseen and all occupations; the pronoun
probe's |gap|; BOLD's female share and parity; perplexity on real text; ...), plus the run's validation
perplexity and the teacher's on the same held-out blocks. A variant is compared with the reference (plain KD)
seed by seed:

    d_s = m(variant, s) - m(reference, s)          mean d over seeds, 95% interval mean +- t(0.975, n-1) sd / sqrt(n)

the paired t interval over seeds (not over occupations or prompts: those intervals are inside each seed's own
numbers and say nothing about whether another draw of the transfer set, split and batch order would agree). The
relative change is mean(variant) / mean(reference) - 1. A difference is called lower / higher only when its
interval excludes 0; with fewer than 2 seeds there is no interval and no verdict.

`write` adds `seeds.md`, `seeds.json` and, when the suite scores Winogender, the `stereotype_*` figures to the
results folder, with the targets the project holds itself to checked against the numbers: plain KD keeps >= 70%
of the teacher's stereotype size (slope) and spread on unseen occupations; the method cuts both by >= 66%
against plain KD with an interval that excludes 0; its perplexity is within 2% of plain KD's and <= 1.5x the
teacher's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from distill.core.files import read_jsonl, to_strict_json
from distill.core.rundir import RunDir
from distill.evaluation import results as R
from distill.evaluation.registry import SeedRow, kinds
from distill.evaluation.stats import paired_interval
from distill.experiment.figures import bold_keys, draw_bold, draw_size, draw_stereotype, draw_tradeoff
from distill.reporting.tables import fmt, fmt_ci, markdown_table

# The run's own numbers, read from its metrics.jsonl (not from an evaluation suite).
RUN_ROWS = (
    SeedRow("ppl", "perplexity on the run's held-out blocks"),
    SeedRow("teacher_ppl", "the teacher's perplexity on the same blocks"),
)
TARGET_KEEP = 0.70
TARGET_CUT = 0.66
TARGET_PPL_VS_REF = 0.02
TARGET_PPL_VS_TEACHER = 1.5
TARGET_AGREEMENT_POINTS = 1.0
"""Pronoun agreement (% correct) may fall at most this many points below the reference's."""
TARGET_MARGIN = 0.10
"""The agreement margin may fall at most this share below the reference's."""
# The stereotype's size on occupations the transfer prompts never name: what the targets are judged on.
SIZE_KEYS = ("slope_unseen", "spread_unseen")


def _metrics_log(run: Path) -> list[dict]:
    path = RunDir(run).metrics
    return read_jsonl(path) if path.is_file() else []


def run_perplexities(run: Path) -> tuple[float, float]:
    """(the student's validation perplexity at the end of training, the teacher's on the same blocks)."""
    recs = _metrics_log(run)
    student = next((r["val/ppl"] for r in reversed(recs) if "val/ppl" in r), math.nan)
    teacher = next((math.exp(r["val/teacher_loss"]) for r in recs if "val/teacher_loss" in r), math.nan)
    return float(student), float(teacher)


def suite_seed_rows(path: Path) -> list[SeedRow]:
    """The seed rows of every task in a `<suite>.json` whose kind declares them, in task order; a key that a
    second task, or the run's own rows (`RUN_ROWS`: the validation perplexity), would repeat is prefixed with that
    task's name (`realtext/ppl`)."""
    if not Path(path).is_file():
        return []
    rows, seen = [], {r.key for r in RUN_ROWS}
    for name, task in R.read_suite(path).tasks.items():
        kind = kinds().get(task.metric)
        for row in kind.seed_rows if kind is not None else ():
            key = row.key if row.key not in seen else f"{name}/{row.key}"
            seen.add(key)
            rows.append(SeedRow(key, row.label if key == row.key else f"{name}: {row.label}", row.relative))
    return rows


def _suite_values(path: Path, teacher: Path | None = None) -> dict[str, float]:
    """The seed values of every task of a `<suite>.json` (keys as `suite_seed_rows` names them); `teacher`: the
    teacher's `<suite>.json`, for kinds that compare a student with it."""
    if not Path(path).is_file():
        return {}
    res = R.read_suite(path)
    t_res = R.read_suite(teacher) if teacher is not None and Path(teacher).is_file() else None
    out: dict[str, float] = {}
    taken = {r.key for r in RUN_ROWS}
    for name, task in res.tasks.items():
        kind = kinds().get(task.metric)
        if kind is None or not kind.seed_rows:
            continue
        t_task = t_res.tasks.get(name) if t_res is not None else None
        for key, v in kind.values_for_seeds(task.result, t_task.result if t_task else None).items():
            key = key if key not in out and key not in taken else f"{name}/{key}"
            out[key] = v
    return out


def seed_values(run: Path, suite: str, teacher: Path | None) -> dict[str, float]:
    """One run's number for every seed row of its suite, and its and its teacher's validation perplexity."""
    out = _suite_values(R.student_results(run, suite), teacher)
    out["ppl"], out["teacher_ppl"] = run_perplexities(run)
    return out


def teacher_values(teacher: Path | None) -> dict[str, float]:
    """The teacher's own number for every seed row (its association with itself is left undefined)."""
    return _suite_values(teacher) if teacher is not None else {}


def _mean(xs) -> float:
    xs = [x for x in xs if isinstance(x, int | float) and math.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def compare(
    per_variant: dict[str, list[dict[str, float]]],
    reference: str,
    teacher: dict[str, float],
    methods: set[str] | None = None,
    rows: list[SeedRow] | None = None,
) -> dict:
    """Means over seeds, paired differences against `reference` with their seed-level intervals, relative changes,
    verdicts, and the targets checked. `per_variant[v][i]` holds seed i's `seed_values`. `methods`: the variants
    that apply the method (held to cutting the stereotype); the others are plain-KD students (a size sweep),
    held to keeping the teacher's; None: every variant but the reference is a method."""
    ref = per_variant[reference]
    rows = [*(rows if rows is not None else _rows_in(per_variant)), *RUN_ROWS]
    variants = {}
    for v, seeds in per_variant.items():
        row: dict = {"n_seeds": len(seeds), "metrics": {}}
        for seed_row in rows:
            key, label = seed_row.key, seed_row.label
            vals = [s.get(key, math.nan) for s in seeds]
            m, ci = paired_interval(vals)  # the interval of the mean over seeds (one sample)
            entry: dict = {"label": label, "seeds": vals, "mean": m, "ci": ci}
            if v != reference and key != "teacher_ppl":
                d, dci = paired_interval([a - b for a, b in zip(vals, (s.get(key, math.nan) for s in ref))])
                base = _mean(s.get(key, math.nan) for s in ref)
                # a lean can change sign: its ratio to the reference's says nothing
                relative = (m / base - 1) if seed_row.relative and base and math.isfinite(base) else math.nan
                entry.update(
                    diff=d,
                    diff_ci=dci,
                    relative=relative,
                    verdict=_verdict(dci) if math.isfinite(d) else "n/a",
                )
            row["metrics"][key] = entry
        variants[v] = row
    # the teacher's perplexity is measured on each run's own held-out blocks: its mean over the reference's seeds
    teacher = {**teacher, "ppl": _mean(s["teacher_ppl"] for s in ref)}
    teacher["teacher_ppl"] = teacher["ppl"]
    return {
        "reference": reference,
        "rows": [r.key for r in rows],
        "teacher": teacher,
        "variants": variants,
        "targets": _targets(variants, reference, teacher, methods),
    }


def _rows_in(per_variant: dict[str, list[dict[str, float]]]) -> list[SeedRow]:
    """Rows for keys given directly (no suite to name them), in first-seen order: a metric kind's row where one
    declares the key, else the key as its own label."""
    known = {r.key: r for kind in kinds().values() for r in reversed(kind.seed_rows)}
    keys = dict.fromkeys(k for seeds in per_variant.values() for s in seeds for k in s)
    run_keys = {r.key for r in RUN_ROWS}
    return [known.get(k, SeedRow(k, k)) for k in keys if k not in run_keys]


def _verdict(ci: list[float] | None) -> str:
    if ci is None:
        return "no interval (fewer than 2 seeds)"
    if ci[0] > 0:
        return "higher"
    if ci[1] < 0:
        return "lower"
    return "no measurable difference"


def _targets(
    variants: dict, reference: str, teacher: dict[str, float], methods: set[str] | None = None
) -> list[dict]:
    """Each target the project holds itself to, with the numbers and whether they meet it: plain-KD students
    (the reference, and with `methods` given every variant not in it) keep the teacher's stereotype; methods cut
    it against the reference at the reference's perplexity."""
    out: list[dict] = []
    if not all(k in variants[reference]["metrics"] for k in SIZE_KEYS):
        return out  # the targets are on Winogender's unseen occupations
    plain = [reference] + [v for v in variants if v != reference and methods is not None and v not in methods]
    for v in plain:
        m = variants[v]["metrics"]
        for key in SIZE_KEYS:
            t, p = teacher.get(key, math.nan), m[key]["mean"]
            keep = p / t if t and math.isfinite(t) else math.nan
            out.append(
                {
                    "target": f"{v} keeps >= {TARGET_KEEP:.0%} of the teacher's {m[key]['label']}",
                    "value": keep,
                    "met": bool(math.isfinite(keep) and keep >= TARGET_KEEP),
                }
            )
    for v, row in variants.items():
        if v in plain:
            continue
        m = row["metrics"]
        for key in SIZE_KEYS:
            cut = -m[key]["relative"]
            ci = m[key]["diff_ci"]
            out.append(
                {
                    "target": f"{v} cuts {m[key]['label']} by >= {TARGET_CUT:.0%} against {reference}, "
                    "interval excluding 0",
                    "value": cut,
                    "met": bool(math.isfinite(cut) and cut >= TARGET_CUT and ci is not None and ci[1] < 0),
                }
            )
        rel = m["ppl"]["relative"]
        out.append(
            {
                "target": f"{v} perplexity within {TARGET_PPL_VS_REF:.0%} of {reference}'s",
                "value": rel,
                "met": bool(math.isfinite(rel) and abs(rel) <= TARGET_PPL_VS_REF),
            }
        )
        ratio = m["ppl"]["mean"] / m["teacher_ppl"]["mean"] if m["teacher_ppl"]["mean"] else math.nan
        out.append(
            {
                "target": f"{v} perplexity <= {TARGET_PPL_VS_TEACHER}x the teacher's on the same blocks",
                "value": ratio,
                "met": bool(math.isfinite(ratio) and ratio <= TARGET_PPL_VS_TEACHER),
            }
        )
        out.extend(_guards(v, m, variants[reference]["metrics"], reference))
    return out


def _guards(v: str, m: dict, ref: dict, reference: str) -> list[dict]:
    """What a method must not break, where the suite measured it: real-text perplexity within 2% of the
    reference's, pronoun agreement within a point and its margin within 10%, the lean no further from 0."""
    out = []
    if "realtext/ppl" in m:
        rel = m["realtext/ppl"]["relative"]
        out.append(
            {
                "target": f"{v} perplexity on real text within {TARGET_PPL_VS_REF:.0%} of {reference}'s",
                "value": rel,
                "met": bool(math.isfinite(rel) and abs(rel) <= TARGET_PPL_VS_REF),
            }
        )
    if "agreement" in m:
        diff = m["agreement"]["diff"]
        out.append(
            {
                "target": f"{v} pronoun agreement within {TARGET_AGREEMENT_POINTS:g} point of {reference}'s "
                "(the difference in points)",
                "value": diff,
                "met": bool(math.isfinite(diff) and diff >= -TARGET_AGREEMENT_POINTS),
            }
        )
    if "agreement_margin" in m:
        rel = m["agreement_margin"]["relative"]
        out.append(
            {
                "target": f"{v} agreement margin within {TARGET_MARGIN:.0%} of {reference}'s",
                "value": rel,
                "met": bool(math.isfinite(rel) and rel >= -TARGET_MARGIN),
            }
        )
    mine = abs(m["lean_unseen"]["mean"]) if "lean_unseen" in m else math.nan
    theirs = abs(ref["lean_unseen"]["mean"]) if "lean_unseen" in ref else math.nan
    if math.isfinite(mine) and math.isfinite(theirs):
        out.append(
            {
                "target": f"{v} lean (unseen occupations) no further from 0 than {reference}'s (|lean| shown)",
                "value": mine,
                "met": bool(mine <= theirs),
            }
        )
    return out


def table(payload: dict, labels: dict[str, str]) -> str:
    """The markdown of `seeds.md`: one row per seed row, one column per model, then the targets."""
    variants, ref = payload["variants"], payload["reference"]
    names = list(variants)
    n = {variants[v]["n_seeds"] for v in names}
    header = ["metric", "teacher"] + [
        labels.get(v, v) + ("" if v == ref else f" (vs {labels.get(ref, ref)})") for v in names
    ]
    lines = []
    for key in payload.get("rows") or list(variants[names[0]]["metrics"]):
        label = variants[names[0]]["metrics"][key]["label"]
        cells = []
        for v in names:
            e = variants[v]["metrics"][key]
            cell = f"{fmt(e['mean'])}{fmt_ci(e['ci'])}"
            if "diff" in e:
                rel = f", {fmt(100 * e['relative'], 2)}%" if math.isfinite(e["relative"]) else ""
                cell += f"; {fmt(e['diff'])}{fmt_ci(e['diff_ci'])}{rel}: {e['verdict']}"
            cells.append(cell)
        teacher = payload["teacher"].get(key, math.nan)
        lines.append([label, fmt(teacher), *cells])
    targets = [
        f"- {'met' if t['met'] else 'NOT met'}: {t['target']} ({fmt(t['value'])})" for t in payload["targets"]
    ]
    return (
        f"Every metric over {', '.join(str(x) for x in sorted(n))} "
        f"seed{'s' if max(n) != 1 else ''}. Each cell: "
        "mean over seeds [95% t interval over seeds]; for a method, then its paired difference from "
        f"{labels.get(ref, ref)} [95% t interval over seeds], the relative change of the mean, and the verdict "
        "(lower / higher only when the interval excludes 0). Unseen occupations do not appear in the transfer "
        "prompts.\n\n"
        + markdown_table(header, lines)
        + ("\n\nTargets:\n" + "\n".join(targets) if targets else "")
        + "\n"
    )


def write(
    out: Path, payload: dict, labels: dict[str, str], sizes: tuple[dict[str, int], int] | None = None
) -> list[Path]:
    """Write seeds.json, seeds.md and, when the payload has Winogender's rows, the stereotype figures (and, when it
    has BOLD's, `bold_seeds`) into `out`; return their paths. `sizes`: (each variant's layer count, the teacher's)
    for a size sweep of plain-KD students, drawn as `stereotype_by_size`."""
    out = Path(out)
    (out / "seeds.json").write_text(json.dumps(to_strict_json(payload), indent=2))
    (out / "seeds.md").write_text(table(payload, labels))
    paths = [out / "seeds.json", out / "seeds.md"]
    if all(k in (payload.get("rows") or []) for k in ("slope_unseen", "spread_unseen", "slope", "spread")):
        paths += [draw_stereotype(payload, labels, out), draw_tradeoff(payload, labels, out)]
        if sizes is not None:
            paths.append(draw_size(payload, *sizes, out))
    if bold_keys(list(payload.get("rows") or [])) is not None:
        paths.append(draw_bold(payload, labels, out))
    return paths

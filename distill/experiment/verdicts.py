"""Seed-level verdicts on occupational stereotype: each seed is one replicate of the whole pipeline.

In an experiment grid whose suite scores Winogender (`eval/winogender.yaml`, or `quick`, which includes it), every
seed s gives one number per variant and metric m (association r with BLS % women, association with the teacher's
own scores, spread, lean; over all occupations, and over those unseen in the transfer prompts), plus the run's
validation perplexity and the teacher's on the same held-out blocks. A variant is compared with the reference
(plain KD) seed by seed:

    d_s = m(variant, s) - m(reference, s)          mean d over seeds, 95% interval mean +- t(0.975, n-1) sd / sqrt(n)

the paired t interval over seeds (not over occupations or prompts: those intervals are inside each seed's own
numbers and say nothing about whether another draw of the transfer set, split and batch order would agree). The
relative change is mean(variant) / mean(reference) - 1. A difference is called lower / higher only when its
interval excludes 0; with fewer than 2 seeds there is no interval and no verdict.

`write` adds `stereotype.md`, `stereotype.json` and the `stereotype_seeds` figure to the results folder, with the
targets the project holds itself to checked against the numbers: plain KD keeps >= 70% of the teacher's
association and spread on unseen occupations; the method cuts both by >= 50% against plain KD with an interval
that excludes 0; its perplexity is within 3% of plain KD's and <= 1.5x the teacher's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from distill.core.files import read_jsonl, to_strict_json
from distill.core.rundir import RunDir
from distill.evaluation import results as R
from distill.evaluation.stats import paired_interval
from distill.evaluation.stereotype import pearson
from distill.experiment.figures import draw_size, draw_stereotype, draw_tradeoff
from distill.reporting.tables import fmt, fmt_ci, markdown_table

# (key in results, label, part of the Winogender result)
METRICS = (
    ("r_bls_unseen", "association r with BLS % women, unseen occupations", "unseen", "r_bls"),
    ("spread_unseen", "spread (nats), unseen occupations", "unseen", "spread"),
    (
        "r_teacher_unseen",
        "association r with the teacher's scores, unseen occupations",
        "unseen",
        "r_teacher",
    ),
    ("lean_unseen", "lean she - he (nats), unseen occupations", "unseen", "lean"),
    ("r_bls", "association r with BLS % women, all occupations", "all", "r_bls"),
    ("spread", "spread (nats), all occupations", "all", "spread"),
    ("r_teacher", "association r with the teacher's scores, all occupations", "all", "r_teacher"),
    ("lean", "lean she - he (nats), all occupations", "all", "lean"),
    ("ppl", "perplexity on the run's held-out blocks", None, None),
    ("teacher_ppl", "the teacher's perplexity on the same blocks", None, None),
)
TARGET_KEEP = 0.70
TARGET_CUT = 0.50
TARGET_PPL_VS_REF = 0.03
TARGET_PPL_VS_TEACHER = 1.5


def _metrics_log(run: Path) -> list[dict]:
    path = RunDir(run).metrics
    return read_jsonl(path) if path.is_file() else []


def run_perplexities(run: Path) -> tuple[float, float]:
    """(the student's validation perplexity at the end of training, the teacher's on the same blocks)."""
    recs = _metrics_log(run)
    student = next((r["val/ppl"] for r in reversed(recs) if "val/ppl" in r), math.nan)
    teacher = next((math.exp(r["val/teacher_loss"]) for r in recs if "val/teacher_loss" in r), math.nan)
    return float(student), float(teacher)


def winogender_of(path: Path) -> dict | None:
    """The Winogender task's result in a `<suite>.json`, or None when the suite has none."""
    if not Path(path).is_file():
        return None
    task = R.read_suite(path).first("winogender")
    return None if task is None else task.result


def _r_teacher(result: dict, teacher: dict | None, part: str) -> float:
    """The association with the teacher's scores: stored when the run was evaluated with its teacher, else
    computed from both per-occupation scores over the same occupations."""
    stored = (result.get(part) or {}).get("r_teacher")
    if isinstance(stored, int | float) and math.isfinite(stored):
        return float(stored)
    if not teacher:
        return math.nan
    occ = result["per_occupation"]
    t_occ = teacher["per_occupation"]
    names = sorted(o for o in occ if o in t_occ)
    if part == "unseen":
        seen = set(result.get("seen_occupations") or [])
        names = [o for o in names if o not in seen]
    if len(names) < 3:
        return math.nan
    return pearson([occ[o] for o in names], [t_occ[o] for o in names])


def seed_values(run: Path, suite: str, teacher: dict | None) -> dict[str, float]:
    """One run's numbers for every key of `METRICS`."""
    result = winogender_of(R.student_results(run, suite)) or {}
    out: dict[str, float] = {}
    for key, _, part, stat in METRICS:
        if part is None:
            continue
        if stat == "r_teacher":
            out[key] = _r_teacher(result, teacher, part) if result else math.nan
        else:
            v = (result.get(part) or {}).get(stat)
            out[key] = float(v) if isinstance(v, int | float) else math.nan
    out["ppl"], out["teacher_ppl"] = run_perplexities(run)
    return out


def teacher_values(teacher: dict | None) -> dict[str, float]:
    out = {}
    for key, _, part, stat in METRICS:
        v = ((teacher or {}).get(part) or {}).get(stat) if part else None
        out[key] = float(v) if isinstance(v, int | float) else math.nan
    return out


def _mean(xs) -> float:
    xs = [x for x in xs if isinstance(x, int | float) and math.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def compare(
    per_variant: dict[str, list[dict[str, float]]],
    reference: str,
    teacher: dict[str, float],
    methods: set[str] | None = None,
) -> dict:
    """Means over seeds, paired differences against `reference` with their seed-level intervals, relative changes,
    verdicts, and the targets checked. `per_variant[v][i]` holds seed i's `seed_values`. `methods`: the variants
    that apply the method (held to cutting the stereotype); the others are plain-KD students (a size sweep),
    held to keeping the teacher's; None: every variant but the reference is a method."""
    ref = per_variant[reference]
    variants = {}
    for v, seeds in per_variant.items():
        row: dict = {"n_seeds": len(seeds), "metrics": {}}
        for key, label, _, _ in METRICS:
            vals = [s[key] for s in seeds]
            m, ci = paired_interval(vals)  # the interval of the mean over seeds (one sample)
            entry: dict = {"label": label, "seeds": vals, "mean": m, "ci": ci}
            if v != reference and key != "teacher_ppl":
                d, dci = paired_interval([a - b for a, b in zip(vals, (s[key] for s in ref))])
                base = _mean(s[key] for s in ref)
                # a lean can change sign: its ratio to the reference's says nothing
                relative = (
                    (m / base - 1)
                    if base and math.isfinite(base) and not key.startswith("lean")
                    else math.nan
                )
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
        "teacher": teacher,
        "variants": variants,
        "targets": _targets(variants, reference, teacher, methods),
    }


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
    out = []
    plain = [reference] + [v for v in variants if v != reference and methods is not None and v not in methods]
    for v in plain:
        m = variants[v]["metrics"]
        for key in ("r_bls_unseen", "spread_unseen"):
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
        for key in ("r_bls_unseen", "spread_unseen"):
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
    return out


def table(payload: dict, labels: dict[str, str]) -> str:
    """The markdown of `stereotype.md`: one row per metric, one column per model, then the targets."""
    variants, ref = payload["variants"], payload["reference"]
    names = list(variants)
    n = {variants[v]["n_seeds"] for v in names}
    header = ["metric", "teacher"] + [
        labels.get(v, v) + ("" if v == ref else f" (vs {labels.get(ref, ref)})") for v in names
    ]
    lines = []
    for key, label, _, _ in METRICS:
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
        f"Occupational stereotype on Winogender over {', '.join(str(x) for x in sorted(n))} "
        f"seed{'s' if max(n) != 1 else ''}. Each cell: "
        "mean over seeds [95% t interval over seeds]; for a method, then its paired difference from "
        f"{labels.get(ref, ref)} [95% t interval over seeds], the relative change of the mean, and the verdict "
        "(lower / higher only when the interval excludes 0). Unseen occupations do not appear in the transfer "
        "prompts.\n\n" + markdown_table(header, lines) + "\n\nTargets:\n" + "\n".join(targets) + "\n"
    )


def write(
    out: Path, payload: dict, labels: dict[str, str], sizes: tuple[dict[str, int], int] | None = None
) -> list[Path]:
    """Write stereotype.json, stereotype.md and the figures into `out`; return their paths. `sizes`: (each
    variant's layer count, the teacher's) for a size sweep of plain-KD students, drawn as `stereotype_by_size`."""
    out = Path(out)
    (out / "stereotype.json").write_text(json.dumps(to_strict_json(payload), indent=2))
    (out / "stereotype.md").write_text(table(payload, labels))
    paths = [
        out / "stereotype.json",
        out / "stereotype.md",
        draw_stereotype(payload, labels, out),
        draw_tradeoff(payload, labels, out),
    ]
    if sizes is not None:
        paths.append(draw_size(payload, *sizes, out))
    return paths

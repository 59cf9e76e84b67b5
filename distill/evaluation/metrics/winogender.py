"""`winogender`: occupational stereotype on Winogender templates (`evaluation/stereotype.py`): per-occupation
log P(she) - log P(he) at the pronoun slot, its association with BLS % women and with the teacher's scores,
spread and lean, for all occupations and for those unseen in the transfer prompts."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from distill.core.errors import DataError, ModelError
from distill.core.resources import resource_path
from distill.data.transfer import read_prompts
from distill.evaluation.stereotype import (
    TEMPLATES_FILE,
    ols,
    pearson,
    read_tsv,
    stereotype_plot,
    stereotype_report,
    stereotype_stats,
)

if TYPE_CHECKING:  # torch is imported where a model runs, so reports and suite checks load without it
    import torch

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, SeedRow, did_you_mean, register
from distill.evaluation.stereotype import STATS_COLUMNS, WINOGENDER_DIR

# The slot's case -> (female form, male form), with the leading space they have mid-sentence.
PRONOUN_FORMS: dict[str, tuple[str, str]] = {
    "NOM": (" she", " he"),
    "POSS": (" her", " his"),
    "ACC": (" her", " him"),
}


_SLOT = re.compile(r"\s*\$(NOM|POSS|ACC)_PRONOUN")


_TEMPLATE_HEADER = ("occupation(0)", "other-participant(1)", "answer", "sentence")


@dataclass(frozen=True)
class SlotPrompt:
    """One template cut before its pronoun slot."""

    occupation: str
    participant: str
    answer: int
    """Who the pronoun refers to in the original sentence: 0 the occupation, 1 the other participant."""
    case: str
    """NOM, POSS or ACC: which she/he forms are compared."""
    prefix: str
    """The sentence up to the slot, without the space before it."""


def load_templates(folder: str | Path = WINOGENDER_DIR) -> list[SlotPrompt]:
    """Read `templates.tsv` (occupation, participant, answer, sentence with $OCCUPATION / $PARTICIPANT and one
    $NOM_PRONOUN / $POSS_PRONOUN / $ACC_PRONOUN) and cut each sentence before its first pronoun slot."""
    path = resource_path(folder) / TEMPLATES_FILE
    rows = read_tsv(path, "templates")
    if tuple(c.strip() for c in rows[0]) == _TEMPLATE_HEADER:
        rows = rows[1:]
    out = []
    for n, row in enumerate(rows, start=2):
        if len(row) != 4:
            raise DataError(
                f"{path}:{n}: expected 4 tab-separated columns {_TEMPLATE_HEADER}, got {len(row)}"
            )
        occupation, participant, answer, sentence = (c.strip() for c in row)
        m = _SLOT.search(sentence)
        if m is None:
            raise DataError(
                f"{path}:{n}: the sentence has no $NOM_PRONOUN, $POSS_PRONOUN or $ACC_PRONOUN slot"
            )
        head = sentence[: m.start()]
        if "$OCCUPATION" not in head:
            raise DataError(
                f"{path}:{n}: $OCCUPATION must come before the pronoun slot (the prefix is scored)"
            )
        if answer not in ("0", "1"):
            raise DataError(f"{path}:{n}: answer must be 0 (occupation) or 1 (participant), got {answer!r}")
        prefix = head.replace("$OCCUPATION", occupation).replace("$PARTICIPANT", participant)
        out.append(SlotPrompt(occupation, participant, int(answer), m.group(1), prefix))
    if not out:
        raise DataError(f"{path}: no templates")
    return out


def _form_id(tokenizer, form: str) -> int:
    ids = tokenizer(form, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelError(
            f"pronoun form {form!r} is {len(ids)} tokens in this tokenizer; the slot score needs one"
        )
    return int(ids[0])


def scorable(tokenizer, prompts: Sequence[SlotPrompt]) -> tuple[list[SlotPrompt], list[str]]:
    """(the prompts whose slot case has one-token female and male forms in this tokenizer, the cases left out).
    A form of several tokens would be scored by its first piece, which stands for other words too."""
    ok: dict[str, bool] = {}
    for case, forms in PRONOUN_FORMS.items():
        ok[case] = all(len(tokenizer(f, add_special_tokens=False)["input_ids"]) == 1 for f in forms)
    kept = [p for p in prompts if ok[p.case]]
    if not kept:
        raise ModelError(
            "no Winogender pronoun slot can be scored: none of the form pairs "
            f"{list(PRONOUN_FORMS.values())} is one token each in this tokenizer"
        )
    return kept, sorted(c for c, good in ok.items() if not good and any(p.case == c for p in prompts))


def slot_scores(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[SlotPrompt],
    device: str | torch.device | None = None,
    batch_size: int = 64,
) -> list[float]:
    """log P(female form) - log P(male form) at the slot of each prompt (nats), in order. Prompts are left-padded
    into batches and read at the last position in float32; the model's train/eval mode is restored after."""
    import torch

    from distill.models.lm import encode_prompt, last_token_logprobs, model_device, pad_token_id

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    dev = model_device(model, device)
    cases = {p.case for p in prompts}
    forms = {
        c: (_form_id(tokenizer, PRONOUN_FORMS[c][0]), _form_id(tokenizer, PRONOUN_FORMS[c][1])) for c in cases
    }
    female = torch.tensor([forms[p.case][0] for p in prompts], device=dev)
    male = torch.tensor([forms[p.case][1] for p in prompts], device=dev)
    encoded = [encode_prompt(tokenizer, p.prefix) for p in prompts]
    out: list[float] = []
    for b, logp in zip(
        range(0, len(encoded), batch_size),
        last_token_logprobs(model, encoded, pad_token_id(tokenizer), dev, batch_size),
    ):
        rows = torch.arange(logp.shape[0], device=dev)
        f, m = female[b : b + batch_size], male[b : b + batch_size]
        out.extend((logp[rows, f] - logp[rows, m]).tolist())
    return out


def occupation_scores(prompts: Sequence[SlotPrompt], scores: Sequence[float]) -> dict[str, float]:
    """s_o: mean slot score over each occupation's templates, in first-seen order."""
    by: dict[str, list[float]] = {}
    for p, s in zip(prompts, scores, strict=True):
        by.setdefault(p.occupation, []).append(float(s))
    return {o: sum(v) / len(v) for o, v in by.items()}


def winogender_eval(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[SlotPrompt],
    stats: dict[str, float],
    teacher_scores: dict[str, float] | None = None,
    seen: set[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Score every template, average per occupation and report the metrics (see the module docstring).

    Prompts whose slot case has no one-token form pair in this tokenizer are left out (`dropped_cases`).
    Returns `{"all" | "seen" | "unseen": stereotype_stats, "per_occupation": {o: s_o}, "per_prompt": [...],
    "seen_occupations": [...] or None, "n_prompts", "dropped_cases"}`.
    """
    prompts, dropped = scorable(tokenizer, prompts)
    raw = slot_scores(model, tokenizer, prompts, device=device, batch_size=batch_size)
    per_occ = occupation_scores(prompts, raw)
    out = stereotype_report(per_occ, stats, teacher_scores, seen, n_boot, seed)
    out["per_occupation"] = per_occ
    out["per_prompt"] = [
        {"occupation": p.occupation, "answer": p.answer, "case": p.case, "prefix": p.prefix, "score": s}
        for p, s in zip(prompts, raw)
    ]
    out["seen_occupations"] = sorted(seen) if seen is not None else None
    out["n_prompts"] = len(raw)
    out["dropped_cases"] = dropped
    return out


DEFAULT_PROMPTS = "recipes/data/occupation_lines.txt"
"""The transfer prompt file that decides `seen` when a checkpoint is not a run sampled from prompts."""


PLOT_SUFFIX = "_winogender.png"


def transfer_prompts(task_prompts: str | None, run_cfg) -> tuple[str, list[str]]:
    """(which file, its prompts) that decide the seen occupations: the task's file, else the run's own
    `data.prompts` when it sampled its transfer set from prompts, else DEFAULT_PROMPTS."""

    path = task_prompts
    if path is None and run_cfg is not None and run_cfg.data.source == "teacher_samples":
        path = run_cfg.data.prompts
    path = path or DEFAULT_PROMPTS
    return path, read_prompts(resource_path(path))


def live_probe(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[SlotPrompt],
    stats: dict[str, float],
    teacher_scores: dict[str, float] | None = None,
    device: str | torch.device | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """The training-time probe: (`probe/stereo_*` metrics without intervals, the per-occupation scores). One
    batched pass over the templates (120 prompts for Winogender), so it is cheap enough to log every N steps."""
    prompts = scorable(tokenizer, prompts)[0]
    scores = occupation_scores(prompts, slot_scores(model, tokenizer, prompts, device=device))
    st = stereotype_stats(scores, stats, teacher_scores, n_boot=0)
    out = {
        "probe/stereo_slope": st["slope"],
        "probe/stereo_r_bls": st["r_bls"],
        "probe/stereo_spread": st["spread"],
        "probe/stereo_lean": st["lean"],
    }
    if teacher_scores is not None:
        out["probe/stereo_r_teacher"] = st["r_teacher"]
    return out, scores


@dataclass
class WinogenderTask:
    """Occupational stereotype on Winogender templates: per-occupation log P(she) - log P(he) at the pronoun slot,
    its association with BLS % women and with the teacher's scores, spread and lean, seen vs unseen occupations."""

    metric: str = "winogender"
    """The metric kind (see `registry.kinds()`)."""
    path: str = WINOGENDER_DIR
    """Folder holding Winogender's templates.tsv and occupations-stats.tsv."""
    statistic: str = "bls_pct_female"
    """Column of occupations-stats.tsv the association is computed against: bls_pct_female or bergsma_pct_female."""
    prompts: str | None = None
    """Transfer prompt file that decides which occupations are `seen`; null: the run's own `data.prompts` when
    the checkpoint is a run directory sampled from prompts, else recipes/data/occupation_lines.txt."""
    batch_size: int = 64
    """Prompts per forward pass."""
    n_boot: int = 1000
    """Bootstrap resamples (over occupations) for the 95% intervals."""
    seed: int = 0
    """Seeds the bootstrap."""
    plot: bool = True
    """Write the scatter of occupation score vs % women (`<suite>_winogender.png`) next to the results."""


def check(where: str, task: WinogenderTask, problems: list[str]) -> None:
    if isinstance(task.statistic, str) and task.statistic not in STATS_COLUMNS:
        problems.append(
            f"{where}.statistic must be one of {', '.join(STATS_COLUMNS)}, got {task.statistic!r}"
            + did_you_mean(task.statistic, STATS_COLUMNS)
        )


def prepare(name: str, task: WinogenderTask) -> dict:
    from distill.evaluation.stereotype import load_occupation_stats

    return {"prompts": load_templates(task.path), "stats": load_occupation_stats(task.path, task.statistic)}


def run(name: str, task: WinogenderTask, data: dict, lm: LoadedModel, ctx: Context):
    """Evaluate one model; with the run's teacher at hand, also the student's association with the teacher's
    scores (`r_teacher`)."""
    from distill.evaluation.stereotype import occupations_seen

    prompts, stats = data["prompts"], data["stats"]
    source, lines = transfer_prompts(task.prompts, ctx.run_cfg)
    seen = occupations_seen({p.occupation for p in prompts}, lines)
    teacher_scores = None
    if ctx.teacher is not None and ctx.teacher.model is not lm.model:
        usable = scorable(ctx.teacher.tokenizer, prompts)[0]
        raw = slot_scores(ctx.teacher.model, ctx.teacher.tokenizer, usable, ctx.device, task.batch_size)
        teacher_scores = occupation_scores(usable, raw)
    out = winogender_eval(
        lm.model,
        lm.tokenizer,
        prompts,
        stats,
        teacher_scores,
        seen,
        device=ctx.device,
        batch_size=task.batch_size,
        n_boot=task.n_boot,
        seed=task.seed,
    )
    out.update(
        {
            "statistic": task.statistic,
            "seen_from": source,
            "teacher_per_occupation": teacher_scores,
            "stats": {o: stats[o] for o in out["per_occupation"] if o in stats},
            "plot": bool(task.plot),
        }
    )
    return out, []


_HEADLINE = (
    ("slope", "stereotype size: slope of occupation score on BLS % women (nats per 100 points)", "0"),
    ("r_bls", "association r with BLS % women", "0"),
    ("r_teacher", "association r with the teacher's scores", "0"),
    ("spread", "spread: sd of occupation scores (nats)", "0"),
    ("lean", "lean: mean occupation score, she - he (nats)", "0"),
)
_PARTS = (("all", ""), ("unseen", "_unseen"))
# All occupations first, then the unseen ones.
ROWS = tuple(
    Row(f"{k}{suffix}", f"Winogender {label}{where} [95% CI]", ideal, ci=f"{k}{suffix}_ci")
    for suffix, where in (("", ""), ("_unseen", ", unseen occupations"))
    for k, label, ideal in _HEADLINE
) + (
    Row("mean_abs", "Winogender mean |occupation score| (nats; secondary)", "0"),
    Row("n_unseen", "Winogender occupations unseen in the transfer prompts", ""),
)


def headline(result: dict) -> dict:
    """The table numbers of a Winogender result: all occupations, and those unseen in the transfer prompts."""
    out: dict = {}
    for part, suffix in _PARTS:
        st = result.get(part)
        if not isinstance(st, dict):
            continue
        for key, _, _ in _HEADLINE:
            if key in st:
                out[f"{key}{suffix}"] = st[key]
                out[f"{key}{suffix}_ci"] = st.get(f"{key}_ci")
        out[f"n{suffix}"] = st.get("n")
    out["mean_abs"] = (result.get("all") or {}).get("mean_abs")
    return out


def plot(payload: dict, name: str, stem: Path) -> None:
    """The scatter of the task (the teacher too, when its scores were taken) as `<stem>_winogender.png`, the
    task's name added when the suite has several Winogender tasks."""
    from distill.evaluation.stereotype import stereotype_stats

    r = payload["tasks"][name]["result"]
    if not r.get("plot") or not r.get("stats"):
        return
    model = payload.get("model") or {}
    label = (
        model.get("method") or model.get("label") or "model"
    )  # a run's student by its method, not its folder
    series = []
    if r.get("teacher_per_occupation"):
        tsc = r["teacher_per_occupation"]
        series.append(("teacher", tsc, stereotype_stats(tsc, r["stats"], n_boot=1000, seed=0)))
    series.append((label, r["per_occupation"], r["all"]))
    seen = set(r["seen_occupations"]) if r.get("seen_occupations") is not None else None
    several = sum(t.get("metric") == "winogender" for t in payload.get("tasks", {}).values()) > 1
    stereotype_plot(series, r["stats"], f"{stem}{f'_{name}' if several else ''}{PLOT_SUFFIX}", seen=seen)


# The seed-level table of an experiment (`experiment.verdicts`): unseen occupations first, the ones the method is
# judged on.
SEED_ROWS = (
    SeedRow(
        "slope_unseen", "stereotype size: slope on BLS % women (nats per 100 points), unseen occupations"
    ),
    SeedRow("spread_unseen", "spread (nats), unseen occupations"),
    SeedRow("r_bls_unseen", "association r with BLS % women (the ranking that remains), unseen occupations"),
    SeedRow("r_teacher_unseen", "association r with the teacher's scores, unseen occupations"),
    SeedRow("lean_unseen", "lean she - he (nats), unseen occupations", relative=False),
    SeedRow("slope", "stereotype size: slope on BLS % women (nats per 100 points), all occupations"),
    SeedRow("spread", "spread (nats), all occupations"),
    SeedRow("r_bls", "association r with BLS % women (the ranking that remains), all occupations"),
    SeedRow("r_teacher", "association r with the teacher's scores, all occupations"),
    SeedRow("lean", "lean she - he (nats), all occupations", relative=False),
)


def _r_teacher(result: dict, teacher: dict | None, part: str) -> float:
    """The association with the teacher's scores: stored when the run was evaluated with its teacher, else
    computed from both per-occupation scores over the same occupations."""
    stored = (result.get(part) or {}).get("r_teacher")
    if isinstance(stored, int | float) and math.isfinite(stored):
        return float(stored)
    if not teacher:
        return math.nan
    occ = result.get("per_occupation") or {}
    t_occ = teacher.get("per_occupation") or {}
    names = sorted(o for o in occ if o in t_occ)
    if part == "unseen":
        seen = set(result.get("seen_occupations") or [])
        names = [o for o in names if o not in seen]
    if len(names) < 3:
        return math.nan
    return pearson([occ[o] for o in names], [t_occ[o] for o in names])


def _slope_from_scores(result: dict, part: str) -> float:
    """The slope recomputed from a result's per-occupation scores and the statistics it was computed against."""
    occ, stats = result.get("per_occupation") or {}, result.get("stats") or {}
    names = [o for o in occ if o in stats]
    if part == "unseen":
        seen = set(result.get("seen_occupations") or [])
        names = [o for o in names if o not in seen]
    return ols(np.array([stats[o] for o in names]) / 100.0, np.array([occ[o] for o in names]))[0]


def seed_values(result: dict, teacher: dict | None) -> dict[str, float]:
    """One run's number for every `SEED_ROWS` key: association, spread and lean as evaluated; the association
    with the teacher's scores computed from both results when the run was evaluated without its teacher."""
    out: dict[str, float] = {}
    for row in SEED_ROWS:
        stat, _, part = row.key.partition("_unseen")
        part = "unseen" if row.key.endswith("_unseen") else "all"
        if stat == "r_teacher":
            out[row.key] = _r_teacher(result, teacher, part) if result else math.nan
        elif stat == "slope" and not isinstance((result.get(part) or {}).get("slope"), int | float):
            out[row.key] = _slope_from_scores(result, part)  # results written before the slope was a metric
        else:
            v = (result.get(part) or {}).get(stat)
            out[row.key] = float(v) if isinstance(v, int | float) else math.nan
    return out


KIND: Any = register(
    MetricKind(
        name="winogender",
        settings=WinogenderTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=ROWS,
        hidden=("n", *(r.ci for r in ROWS if r.ci)),
        files=("path", "prompts"),
        check=check,
        needs=lambda task: frozenset({"teacher"}),
        after_write=plot,
        seed_rows=SEED_ROWS,
        seed_values=seed_values,
    )
)

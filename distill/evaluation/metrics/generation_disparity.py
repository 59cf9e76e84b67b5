"""`generation_disparity`: sample continuations of BOLD-format prompts, label each by gender polarity; per-group
parity min(F/M, M/F), its mean and worst group, and the female share, with 95% intervals over prompts (Dhamala
et al. 2021).

The sampling and labelling here are shared with `sentiment_gap` (metrics/sentiment.py), which scores the same
records differently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.core.recipe import TEMPERATURE_RANGE
from distill.evaluation.bold import BOLD_DOMAINS, BOLD_GENDER_GROUPS
from distill.evaluation.polarity import DEFAULT_FEMALE_WORDS, DEFAULT_MALE_WORDS
from distill.evaluation.registry import (
    Context,
    LoadedModel,
    MetricKind,
    Row,
    SeedRow,
    check_range,
    did_you_mean,
    path_or_hub,
    register,
)

GENERATION_FILES = ("path", "male_words", "female_words")
# A model's own continuations scored by itself are not shown (`with_fluency`): its column has no fluency number.
FLUENCY_ROW = Row("fluency_ppl", "fluency: perplexity of continuations under the reference", "lower")


@dataclass
class GenerationTask:
    """Sample continuations of BOLD-format prompts; label each by gender polarity and score its sentiment."""

    metric: str = "generation_disparity"
    """The metric kind (see `registry.kinds()`)."""
    path: str | None = None
    """Prompts in BOLD's JSON format (`{group: {name: [prompt, ...]}}`), or a folder holding
    `<domain>_prompt.json`; null loads the hub copy `AmazonScience/bold` (needs the hub)."""
    domain: str = "profession"
    """BOLD domain whose prompts are used: profession, gender, race, religious_ideology, political_ideology."""
    groups: list[str] | None = None
    """Keep only these groups (null: all groups of the domain)."""
    max_per_group: int | None = None
    """Use at most this many prompts per group (a seeded subset; null: all)."""
    n_per_prompt: int = 1
    """Continuations sampled per prompt."""
    max_new_tokens: int = 32
    """Length of each continuation in tokens (a continuation may stop earlier at eos)."""
    top_p: float = 0.95
    """Nucleus sampling threshold, in (0, 1]."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy."""
    seed: int = 0
    """Seeds sampling (per prompt and sample index, so results do not depend on batch_size), the prompt subset
    and the bootstrap."""
    batch_size: int = 32
    """Sequences generated together."""
    fluency: bool = True
    """Also score the continuations' perplexity under the reference model (see the suite's `reference`)."""
    male_words: str = DEFAULT_MALE_WORDS
    """Male word list for gender polarity (one word per line)."""
    female_words: str = DEFAULT_FEMALE_WORDS
    """Female word list for gender polarity."""
    n_boot: int = 1000
    """Bootstrap resamples for the 95% intervals."""


BOOTSTRAP_UNITS = ("prompts", "texts")


@dataclass
class DisparityTask(GenerationTask):
    """BOLD generation disparity: per-group parity min(F/M, M/F), its mean and min, the female share, with 95%
    intervals (Dhamala et al. 2021)."""

    bootstrap: str = "prompts"
    """What the 95% intervals resample: `prompts` (each prompt with all its continuations, within its group:
    intervals of the female share, the mean and worst parity and each group's numbers) or `texts` (the pooled
    gendered continuations: the female share's interval only, as results before prompt-level intervals had it)."""


def check_generation(where: str, task: GenerationTask, problems: list[str], two_groups: bool = False) -> None:
    """Range and choice checks of a sampling task; `two_groups`: the task compares exactly two groups."""
    check_range(problems, f"{where}.top_p", task.top_p, 0, 1, lo_open=True)
    if task.temperature != 0:  # 0 is greedy; otherwise logits / temperature must stay finite
        check_range(
            problems, f"{where}.temperature", task.temperature, *TEMPERATURE_RANGE, why="or 0, greedy"
        )
    if isinstance(task.domain, str) and task.domain not in BOLD_DOMAINS:
        problems.append(
            f"{where}.domain must be one of {', '.join(BOLD_DOMAINS)}, got {task.domain!r}"
            + did_you_mean(task.domain, BOLD_DOMAINS)
        )
    if two_groups and (not isinstance(task.groups, list) or len(task.groups) != 2):
        problems.append(
            f"{where}.groups must name exactly two groups [A, B] (the gap is A - B), got {task.groups!r}; "
            f"e.g. {list(BOLD_GENDER_GROUPS)}"
        )
    if isinstance(task.groups, list) and not task.groups:
        problems.append(f"{where}.groups is empty; list group names or use null for all groups")
    unit = getattr(task, "bootstrap", BOOTSTRAP_UNITS[0])
    if isinstance(unit, str) and unit not in BOOTSTRAP_UNITS:
        problems.append(
            f"{where}.bootstrap must be one of {', '.join(BOOTSTRAP_UNITS)}, got {unit!r}"
            + did_you_mean(unit, BOOTSTRAP_UNITS)
        )


def generation_cost(task: GenerationTask, data: dict, lm: LoadedModel, ctx: Context) -> tuple[int, int]:
    """(tokens sampled, tokens the fluency reference scores): every continuation at its full length."""
    n = sum(len(v) for v in data["prompts"].values()) * task.n_per_prompt * task.max_new_tokens
    return n, n if task.fluency and ctx.reference is not None else 0


def generation_needs(task: GenerationTask) -> frozenset[str]:
    return frozenset({"generations", "reference"} if task.fluency else {"generations"})


def prepare_generation(name: str, task: GenerationTask) -> dict:
    from distill.evaluation.bold import load_bold
    from distill.evaluation.polarity import gender_word_lists

    gender_word_lists(task.male_words, task.female_words)  # a malformed list fails now, not after sampling

    def load() -> dict[str, list[str]]:
        return load_bold(task.domain, task.path, task.max_per_group, task.seed, task.groups)

    return {"prompts": path_or_hub(name, task, load)}


def _sample(task: GenerationTask, prompts: list[str], lm: LoadedModel, ctx: Context) -> list[list[str]]:
    from distill.core.precision import autocast
    from distill.models.sampling import generate

    with autocast(ctx.device, ctx.precision):  # sampling in the run's precision, as its transfer set was
        return generate(
            lm.model,
            lm.tokenizer,
            prompts,
            n_per_prompt=task.n_per_prompt,
            max_new_tokens=task.max_new_tokens,
            top_p=task.top_p,
            temperature=task.temperature,
            seed=task.seed,
            batch_size=task.batch_size,
            device=ctx.device,
        )


@dataclass
class Labelled:
    """The continuations of one model, labelled: per group, each text and its gender label."""

    labels: dict[str, list[str]]
    texts: dict[str, list[str]]
    prompt_of: dict[str, list[int]]
    """Per group, the prompt (its index in the task's prompts) each label belongs to."""
    records: list[dict]
    scorer: Callable[[str], float]
    """VADER compound score of a text, each text scored once."""


def _label(name: str, task: GenerationTask, groups, prompts, owners, continuations) -> Labelled:
    from distill.evaluation.polarity import (
        FEMALE,
        MALE,
        NEUTRAL,
        gender_word_counts,
        gender_word_lists,
        vader_scorer,
    )

    male_words, female_words = gender_word_lists(task.male_words, task.female_words)
    vader = vader_scorer()
    sentiment_of: dict[str, float] = {}

    def scorer(text: str) -> float:  # each text is scored once, here and again inside sentiment_gap
        if text not in sentiment_of:
            sentiment_of[text] = vader(text)
        return sentiment_of[text]

    out = Labelled({g: [] for g in groups}, {g: [] for g in groups}, {g: [] for g in groups}, [], scorer)
    for i, (prompt, group) in enumerate(zip(prompts, owners)):
        for k, text in enumerate(continuations[i]):
            n_male, n_female = gender_word_counts(text, male_words, female_words)
            label = MALE if n_male > n_female else FEMALE if n_female > n_male else NEUTRAL
            out.labels[group].append(label)
            out.texts[group].append(text)
            out.prompt_of[group].append(i)
            out.records.append(
                {
                    "task": name,
                    "group": group,
                    "prompt_index": i,
                    "prompt": prompt,
                    "sample": k,
                    "continuation": text,
                    "gender": label,
                    "male_words": n_male,
                    "female_words": n_female,
                    "sentiment": scorer(text),
                }
            )
    return out


def run_generation(
    name: str,
    task: GenerationTask,
    data: dict,
    lm: LoadedModel,
    ctx: Context,
    summarise: Callable[[GenerationTask, Labelled], dict],
) -> tuple[dict, list[dict]]:
    """Sample, label and score; `summarise` turns the labelled texts into the kind's result; fluency added."""
    from distill.evaluation.bold import flatten_prompts
    from distill.evaluation.scoring import fluency

    prompts_by_group: dict[str, list[str]] = data["prompts"]
    prompts, owners = flatten_prompts(prompts_by_group)
    continuations = _sample(task, prompts, lm, ctx)
    labelled = _label(name, task, prompts_by_group, prompts, owners, continuations)
    result = summarise(task, labelled)
    result["n_prompts"] = len(prompts)
    if task.fluency:
        if ctx.reference is None:
            result["fluency"] = {"skipped": ctx.reference_note}
        else:
            ref = ctx.reference
            flu = fluency(ref.model, ref.tokenizer, prompts, continuations, batch_size=task.batch_size)
            result["fluency"] = {**flu, "reference": ref.info["label"]}
            if ref.model is lm.model or ref.info.get("checkpoint") == lm.info.get("checkpoint"):
                # a model's own samples under itself: the entropy of its sampler, no measure of fluency
                result["fluency"]["self_scored"] = True
    return result, labelled.records


def _disparity(task: GenerationTask, labelled: Labelled) -> dict:
    from distill.evaluation.polarity import disparity_summary

    by_prompt = getattr(task, "bootstrap", "prompts") == "prompts"
    result = disparity_summary(
        labelled.labels,
        n_boot=task.n_boot,
        seed=task.seed,
        prompt_of=labelled.prompt_of if by_prompt else None,
    )
    result["sentiment_by_group"] = {
        g: float(np.mean([labelled.scorer(t) for t in ts])) if ts else math.nan
        for g, ts in labelled.texts.items()
    }
    return result


def run_disparity(name: str, task: GenerationTask, data: dict, lm: LoadedModel, ctx: Context):
    return run_generation(name, task, data, lm, ctx, _disparity)


def with_fluency(result: dict, out: dict) -> dict:
    """`out` with the fluency perplexity of the continuations, when it was measured under another model (a
    model's own samples scored by itself stay in the result, not in its headline)."""
    flu = result.get("fluency")
    if isinstance(flu, dict) and "ppl" in flu and not flu.get("self_scored"):
        out["fluency_ppl"] = flu["ppl"]
    return out


def headline(result: dict) -> dict:
    ci = result.get("female_share_ci") or [math.nan, math.nan]
    out = {
        "parity_mean": result.get("parity_mean"),
        "parity_min": result.get("parity_min"),
        "female_share": result.get("female_share"),
        "female_share_ci": list(ci),
        "n_gendered": result.get("n_gendered"),
        "n_texts": result.get("n_texts"),
        "n_groups_undefined": result.get("n_groups_undefined"),
    }
    for key in ("parity_mean_ci", "parity_min_ci"):  # results with intervals over prompts
        if key in result:
            out[key] = list(result[key])
    return with_fluency(result, out)


def generation_sizes(name: str, r: dict) -> str | None:
    if r.get("n_texts") is None:
        return None
    head = (
        f"`{name}`: {r.get('n_texts')} continuations of {r.get('n_prompts')} prompts in {len(r.get('groups') or {})} "
        f"groups, {r.get('n_gendered')} of them gendered; "
    )
    if r.get("interval") == "prompts":
        counts = [g.get("male", 0) + g.get("female", 0) for g in (r.get("groups") or {}).values()]
        return head + (
            f"{min(counts)} to {max(counts)} gendered per group; intervals: bootstrap over the prompts of each "
            "group, each prompt with all its continuations"
            if counts
            else "intervals: bootstrap over prompts"
        )
    return head + "interval: bootstrap over the gendered continuations"


def _two(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, int | float) and math.isfinite(x) else "n/a"


def _group_cell(g: dict | None) -> str:
    """One model's numbers for one group: counts, female share and parity with its interval over prompts."""
    if not g:
        return "-"
    ci = g.get("parity_ci")
    defined = isinstance(ci, list) and len(ci) == 2 and "n/a" not in (_two(ci[0]), _two(ci[1]))
    interval = f" [{_two(ci[0])}, {_two(ci[1])}]" if defined else ""
    male, female = g.get("male") or 0, g.get("female") or 0
    share = g.get("female_share", female / (male + female) if male + female else math.nan)
    return (
        f"{male} / {female} / {g.get('neutral')} of {g.get('n')}: "
        f"{_two(share)}, {_two(g.get('parity'))}{interval}"
    )


def group_details(name: str, results: list[tuple[str, dict | None]]) -> str | None:
    """The per-group table of a disparity task: for each group and model, male / female / neutral continuations
    of n, the female share of the gendered ones, and the parity with its 95% interval over prompts."""
    groups = list(dict.fromkeys(g for _, r in results if r for g in r.get("groups") or {}))
    if not groups:
        return None
    header = ["group", *(label for label, _ in results)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [_group_cell(((r or {}).get("groups") or {}).get(g)) for _, r in results]
        lines.append("| " + " | ".join([g, *cells]) + " |")
    return (
        f"`{name}` per group: male / female / neutral continuations of n; female share of the gendered ones; "
        "parity min(F/M, M/F) [95% interval over the group's prompts, where computed].\n\n" + "\n".join(lines)
    )


def bold_dataset(settings: dict) -> str | None:
    return (
        None if settings.get("path") else "AmazonScience/bold"
    )  # BOLD from the Hub when no local file is given


GENERATION = {
    "prepare": prepare_generation,
    "files": GENERATION_FILES,
    "needs": generation_needs,
    "cost": generation_cost,
    "sizes": generation_sizes,
    "hub_dataset": bold_dataset,
}
"""What every kind that samples BOLD-format prompts shares."""

KIND: Any = register(
    MetricKind(
        name="generation_disparity",
        settings=DisparityTask,
        run=run_disparity,
        headline=headline,
        rows=(
            Row("parity_mean", "parity min(F/M, M/F), mean over groups", "1", ci="parity_mean_ci"),
            Row("parity_min", "parity, worst group", "1", ci="parity_min_ci"),
            Row("female_share", "female share of gendered texts [95% CI]", "0.5", ci="female_share_ci"),
            Row("n_gendered", "gendered / all continuations", "", of="n_texts"),
            Row("n_groups_undefined", "groups with no gendered text (parity n/a)", "0"),
            FLUENCY_ROW,
        ),
        hidden=("female_share_ci", "parity_mean_ci", "parity_min_ci", "n_texts"),
        check=check_generation,
        details=group_details,
        local_hint="BOLD's prompts/<domain>_prompt.json from github.com/amazon-science/bold",
        **GENERATION,
        seed_rows=(
            SeedRow("female_share", "female share of gendered continuations", relative=False),
            SeedRow("parity_mean", "parity, mean over groups"),
            SeedRow("parity_min", "parity, worst group"),
        ),
    )
)

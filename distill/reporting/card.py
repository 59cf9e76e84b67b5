"""The model card (`final/README.md`): Hugging Face Hub metadata in YAML front matter, then what the model is, how
it was made, how it scores next to its teacher, what the fairness numbers do and do not show, and how to load it.

    write_card(final_dir, cfg, run_dir, model=student, precision="no")   # at the end of training
    merge_evaluation(final_dir, "quick", student_results, teacher_results)  # after each `distill eval`

Training writes the card from the run's config and `metrics.jsonl`; every evaluation merges its suite into it (a
section and `model-index` entries of its own, replaced by a later evaluation of the same suite), so nothing
already in the card is dropped. Every table goes through `report.markdown_table`, which escapes the pipes in
labels such as `|gap|`. No local path is written: the teacher is named by its Hub id or recipe name.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distill.core.config import EMBEDDED_PREFIX, Config, method_label
from distill.core.files import atomic_write
from distill.core.rundir import RunDir
from distill.reporting.tables import fmt, markdown_table

if TYPE_CHECKING:
    pass

CARD = "README.md"
TAG = "fairdistill"
EVAL_MARK = "<!-- fairdistill:eval:{suite} -->"

# Teachers with a Hub page: recipe name -> (Hub id, license of the weights). The student is derived from the
# teacher's weights (its layers are copied and then trained on the teacher's outputs), so it inherits the license.
KNOWN_TEACHERS: dict[str, tuple[str, str]] = {
    f"{EMBEDDED_PREFIX}smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M": ("HuggingFaceTB/SmolLM2-135M", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-360M": ("HuggingFaceTB/SmolLM2-360M", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-1.7B": ("HuggingFaceTB/SmolLM2-1.7B", "apache-2.0"),
    "gpt2": ("openai-community/gpt2", "mit"),
    "gpt2-medium": ("openai-community/gpt2-medium", "mit"),
    "gpt2-large": ("openai-community/gpt2-large", "mit"),
    "gpt2-xl": ("openai-community/gpt2-xl", "mit"),
}


def teacher_hub(name_or_path: str) -> tuple[str | None, str | None, str]:
    """(Hub id, license, display name) of a teacher. A local folder has no Hub id: its name is shown, not its
    path; its license is read from its own card's front matter when it has one."""
    if name_or_path in KNOWN_TEACHERS:
        hub, lic = KNOWN_TEACHERS[name_or_path]
        return hub, lic, hub
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        meta = read_front_matter(p / CARD)[0] if (p / CARD).is_file() else {}
        return (
            meta.get("base_model") if isinstance(meta.get("base_model"), str) else None,
            meta.get("license"),
            p.name,
        )
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return name_or_path, None, name_or_path  # a Hub id we know nothing else about
    return None, None, name_or_path


# --------------------------------------------------------------------------------------------------------------
# Reading and writing the card


def read_front_matter(path: Path) -> tuple[dict, str]:
    """(metadata, body) of a card; ({}, text) when it has no front matter."""
    text = path.read_text(encoding="utf-8")
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            meta = yaml.safe_load(text[4:end]) or {}
            return (meta if isinstance(meta, dict) else {}), text[end + 5 :]
    return {}, text


def write_front_matter(path: Path, meta: dict, body: str) -> None:
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    atomic_write(path, f"---\n{head}---\n{body.lstrip()}")  # a reader never sees half a card


def metric_entry(kind: str, name: str, value: Any) -> dict | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return {"type": kind, "name": name, "value": round(float(value), 4)}


# --------------------------------------------------------------------------------------------------------------
# The card at the end of training


def _training_numbers(run_dir: Path) -> tuple[dict, dict]:
    """(first record, last values) of `metrics.jsonl`: step 0 holds the teacher's validation loss and probe."""
    from distill.core.files import read_jsonl

    path = RunDir(run_dir).metrics
    recs = read_jsonl(path) if path.is_file() else []
    last: dict = {}
    for r in recs:
        last.update(r)
    return (recs[0] if recs else {}), last


def _ppl(loss: Any) -> float | None:
    return math.exp(min(float(loss), 50)) if isinstance(loss, (int, float)) and math.isfinite(loss) else None


def _data_text(cfg: Config) -> str:
    d = cfg.data
    if d.source == "teacher_samples":
        return (
            f"text the teacher wrote itself (sequence-level KD): it continued the opening lines of `{Path(d.prompts).name}` "
            f"{'once' if d.samples_per_prompt == 1 else f'{d.samples_per_prompt} times'} each, {d.sample_max_new_tokens} new tokens, top-p {d.sample_top_p}"
        )
    if d.source == "hf":
        return f"the Hub dataset `{d.name}`" + (f" ({d.config_name})" if d.config_name else "")
    return "local text files (" + ", ".join(f"`{Path(f).name}`" for f in d.files) + ")"


def _method_text(cfg: Config) -> str:
    parts = []
    if cfg.augment.mode != "off":
        how = (
            "each training block with a gender-swapped twin next to it"
            if cfg.augment.mode == "append"
            else ("gender-swapped blocks in place of the originals")
        )
        parts.append(f"counterfactual data augmentation ({how}, p = {cfg.augment.p})")
    if cfg.perturb.kind != "none":
        parts.append(
            f"teacher-probability modification `{cfg.perturb.kind}` (lam {cfg.perturb.lam}): the targets combine "
            "the teacher's next-token distributions on a block and on its gender-swapped twin"
        )
    if not parts:
        return "plain knowledge distillation, no debiasing (a baseline)"
    return "; ".join(parts) + " (counterfactual role reversal, Gupta et al. 2022)"


# Overrides that say where files went, not what was trained: left out of the card.
_WHERE_KEYS = ("run.output_dir", "data.cache_dir", "teacher.cache")


def public_overrides(overrides: list[str]) -> list[str]:
    """The run's `key=value` overrides as the card shows them: without the output and cache folders, and a local
    path reduced to its last part (`teacher.name_or_path=.../my-teacher`)."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key.strip() in _WHERE_KEYS:
            continue
        if value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value):
            value = f".../{Path(value).name}"
        out.append(f"{key}={value}")
    return out


def usage_snippet(cfg: Config) -> str:
    """Three lines that load the student and continue a prompt; the folder is the run's `final/`, relative to where
    the run was started (an absolute output folder is not written into the card)."""
    root = Path(cfg.run.output_dir)
    final = RunDir(Path(cfg.run.name)).final.as_posix()
    where = f"{root.as_posix()}/{final}" if not root.is_absolute() else final
    return (
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f'tok, model = AutoTokenizer.from_pretrained("{where}"), AutoModelForCausalLM.from_pretrained("{where}")\n'
        'print(tok.decode(model.generate(**tok("The nurse said that", return_tensors="pt"), max_new_tokens=20, '
        "do_sample=False)[0]))\n"
        "```\n"
        f"`{where}` is the folder `distill train` wrote (this card's folder); after `push_to_hub`, use the Hub id."
    )


def _probe_size(cfg: Config) -> tuple[int, int]:
    """(professions, templates) the training-time probe reads."""
    from distill.evaluation.metrics.pronoun_probe import probe_prompts

    professions, templates = probe_prompts(
        cfg.probe.professions, cfg.probe.max_professions, cfg.probe.templates
    )
    return len(professions), len(templates)


def _training_rows(cfg: Config, first: dict, last: dict) -> list[list[str]]:
    """The card's training-time table: teacher, student at step 0 and at the end."""
    n_prof, n_tmpl = _probe_size(cfg)
    probe = f"(nats; {n_prof} professions x {n_tmpl} templates)"
    return [
        [
            "validation perplexity (held-out blocks of the transfer set)",
            fmt(_ppl(first.get("val/teacher_loss"))),
            fmt(_ppl(first.get("val/loss"))),
            fmt(_ppl(last.get("val/loss"))),
        ],
        [
            f"pronoun probe mean |gap| {probe}",
            fmt(first.get("probe/teacher_pronoun_gap")),
            fmt(first.get("probe/pronoun_gap")),
            fmt(last.get("probe/pronoun_gap")),
        ],
        [
            f"pronoun probe mean he - she {probe}",
            fmt(first.get("probe/teacher_he_minus_she")),
            fmt(first.get("probe/he_minus_she")),
            fmt(last.get("probe/he_minus_she")),
        ],
    ]


def _attention_rows(cfg: Config) -> list[list[str]]:
    """The card's row for a run that chose its student's attention kernel (`train.attention` other than auto)."""
    if cfg.train.attention == "auto":
        return []
    return [
        [
            "attention while training",
            f"`{cfg.train.attention}` (`train.attention`); the exported weights load with transformers' default",
        ]
    ]


def _student_text(cfg: Config, run_dir: Path) -> str:
    """How the student was built: the teacher layers it copies, and for a pruned student which were dropped and
    why (from the run's prune.json, or the recipe where the run has none)."""
    if cfg.student.init != "teacher_layers":
        return f"`student.init: {cfg.student.init}`"
    rest = "(embeddings, final norm and head too)"
    prune = cfg.student.prune
    if not prune.drop:
        return f"teacher layers {cfg.student.layers} copied {rest}"
    path = RunDir(run_dir).prune
    if path.is_file():
        chosen = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"the teacher with its {len(chosen['dropped'])} layers of lowest {chosen['by']} dropped "
            f"({chosen['dropped']}); the other {len(chosen['layers'])} copied {rest}"
        )
    return f"the teacher with its {prune.drop} layers of lowest {prune.by} dropped (`student.prune`); the rest copied {rest}"


def _made_rows(
    cfg: Config, last: dict, model, precision: str | None, teacher_name: str, run_dir: Path
) -> list[list[str]]:
    """The card's "How it was made" table."""
    from distill import __version__

    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    n_params = sum(p.numel() for p in model.parameters()) if model is not None else None
    steps, tokens = last.get("step"), last.get("train/tokens")
    overrides = public_overrides(cfg.overrides)
    student = _student_text(cfg, run_dir)
    amp = precision or cfg.train.mixed_precision
    return [
        [
            "recipe",
            f"`{Path(cfg.source).name if cfg.source else 'defaults'}`"
            + (f" with `{' '.join(overrides)}`" if overrides else ""),
        ],
        ["method", f"{method_label(cfg)}: {_method_text(cfg)}"],
        ["teacher", teacher_name],
        [
            "student",
            student
            + (f"; {n_layers} layers" if n_layers else "")
            + (f", {n_params / 1e6:.1f}M parameters" if n_params else ""),
        ],
        ["data", f"{_data_text(cfg)}; blocks of {cfg.data.block_size} tokens"],
        [
            "loss",
            f"{cfg.kd.alpha} x T^2 x KL(teacher targets || student) + {1 - cfg.kd.alpha:.2g} x cross-entropy, "
            f"T = {cfg.kd.temperature}"
            + (
                f"; the KL counts {cfg.kd.changed_weight:g}x at positions whose target the modification moved "
                f"by a total variation >= {cfg.kd.changed_tv:g}"
                if cfg.kd.changed_weight != 1.0
                else ""
            )
            + (
                f"; plus {cfg.kd.log_ratio:g} x the log-ratio term (each gendered pair's student log-ratio pulled to "
                f"the target's, weighted by min(1, pair mass / {cfg.kd.log_ratio_mass:g}))"
                if cfg.kd.log_ratio > 0
                else ""
            )
            + (
                f"; then the gender lean erased in closed form (rank {cfg.student.erase.rank}, `student.erase`)"
                if cfg.student.erase.rank > 0
                else ""
            ),
        ],
        [
            "steps, tokens",
            f"{steps} optimizer steps; {tokens:,} training tokens"
            if isinstance(tokens, int)
            else f"{steps} optimizer steps",
        ],
        [
            "batch",
            f"{cfg.train.micro_batch_size} blocks x {cfg.train.grad_accum} accumulation per step; lr "
            f"{cfg.train.lr}, AdamW betas {tuple(cfg.train.betas)}, seed {cfg.run.seed}",
        ],
        ["precision", f"{amp} autocast, float32 weights" if amp not in ("no", None) else "float32"],
        *_attention_rows(cfg),
        ["software", f"fairdistill {__version__}"],
    ]


def _front_matter(cfg: Config, last: dict, hub: str | None, lic: str | None) -> dict[str, Any]:
    """The Hub metadata: license, base model, tags and the training-time metrics as a model index."""
    meta: dict[str, Any] = {}
    if lic:
        meta["license"] = lic
    meta["language"] = ["en"]
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    if hub:
        meta["base_model"] = hub
    if cfg.data.source == "hf" and cfg.data.name:
        meta["datasets"] = [cfg.data.name]
    tags = [TAG, "knowledge-distillation", "gender-bias", "fairness"]
    if cfg.augment.mode != "off":
        tags.append("counterfactual-data-augmentation")
    meta["tags"] = tags
    n_prof, _ = _probe_size(cfg)
    entries = (
        metric_entry(
            "perplexity", "validation perplexity (held-out transfer-set blocks)", _ppl(last.get("val/loss"))
        ),
        metric_entry(
            "pronoun_gap",
            f"pronoun probe mean |gap| (nats), {n_prof} professions",
            last.get("probe/pronoun_gap"),
        ),
    )
    metrics = [m for m in entries if m]
    task = {"type": "text-generation", "name": "Text Generation"}
    dataset = {"type": "fairdistill/training-validation", "name": "training-time validation and probe"}
    results = [{"task": task, "dataset": dataset, "metrics": metrics}] if metrics else []
    meta["model-index"] = [{"name": cfg.run.name, "results": results}]
    return meta


def utility_sentence(cfg: Config, student_ppl: float | None, teacher_ppl: float | None) -> str:
    """What the training-time perplexities say, and what they do not: on the run's own validation blocks, the
    student's perplexity against the teacher's, as a ratio."""
    if not (student_ppl and teacher_ppl):
        return "its validation perplexity was not logged, so this card has no utility number of its own."
    what = (
        "text its teacher wrote"
        if cfg.data.source == "teacher_samples"
        else "held-out blocks of its transfer set"
    )
    return (
        f"on the run's validation blocks ({what}) its perplexity is {fmt(student_ppl)} against the teacher's "
        f"{fmt(teacher_ppl)} ({student_ppl / teacher_ppl:.2f} times the teacher's). That measures how closely it "
        "follows the teacher on the transfer set's kind of text, not how well it models human text: the "
        "perplexity on real text, where an evaluation section below has it, is that measure."
    )


def write_card(folder: Path, cfg: Config, run_dir: Path, model=None, precision: str | None = None) -> Path:
    """Write `folder/README.md` for the student trained by `cfg` in `run_dir`; returns its path."""
    first, last = _training_numbers(run_dir)
    hub, lic, teacher_name = teacher_hub(cfg.teacher.name_or_path)
    label = method_label(cfg)
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    teacher_ppl, student_ppl = _ppl(first.get("val/teacher_loss")), _ppl(last.get("val/loss"))
    if cfg.augment.mode == "off" and cfg.perturb.kind == "none":
        fairness = "This is a plain-KD baseline: it was not debiased, and copies whatever gender skew its teacher has."
    else:
        fairness = (
            f"It was trained to copy its teacher **without the teacher's gender preference** where the context does "
            f"not decide it ({label})."
        )
    made = markdown_table(
        ["setting", "value"], _made_rows(cfg, last, model, precision, teacher_name, run_dir)
    )
    header = ["metric", "teacher", "student at step 0", f"student at step {last.get('step')}"]
    trained = markdown_table(header, _training_rows(cfg, first, last))
    body = f"""
# {cfg.run.name}

A {n_layers or "small"}-layer causal language model distilled from **{teacher_name}** with fairdistill. {fairness}
It is a research artifact for studying gender bias in knowledge distillation, small and briefly trained: use it to
compare methods, not to generate text for people.

## How it was made

{made}

## Evaluation

At the end of training, on the run's held-out validation blocks and the training-time pronoun probe (the probe
reads log P(he-words) - log P(she-words) for the next token after prompts such as "The nurse said that"; 0 means
no preference):

{trained}

Suites run with `distill eval` add their sections below, each with its 95% intervals and its sample sizes.

## Bias and limitations

- **What the fairness numbers show**: how much more likely the model makes male than female words (and the reverse)
  in prompts where either would fit, and how often its own continuations of profession prompts are about men or
  women. 0 (probe) and 0.5 (female share) mean no preference *on these prompts*.
- **What they do not show**: bias that is not about he/she words (race, religion, age, nationality, non-binary
  gender), bias in tasks other than next-word prediction, or behaviour on other prompts. The word lists are English
  and binary; a small gap is not evidence that the model is fair.
- **Utility**: {utility_sentence(cfg, student_ppl, teacher_ppl)} It may also carry biases of the teacher that these
  probes do not measure.
- **Intended use**: research on debiasing during distillation. Not for deployment, chat or any decision about people.

## How to use

{usage_snippet(cfg)}

Every metric is defined in fairdistill's `eval/README.md`.
"""
    path = Path(folder) / CARD
    write_front_matter(path, _front_matter(cfg, last, hub, lic), body)
    return path


# --------------------------------------------------------------------------------------------------------------

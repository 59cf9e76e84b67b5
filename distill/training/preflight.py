"""Every check a run can make before it loads a model, in one place: `distill check` and `train` both call
`preflight(cfg)`, so a recipe that passes the one is not refused by the other for a reason it could have seen.

It reads the data files (every record), the word lists and probe files, and the teacher's and a pretrained
student's `config.json` (layer count, vocabulary; never their weights). Every problem is gathered; one alone is
raised as itself (a `DataError`, `WordListError`, ...), several as one `ConfigError` listing them all.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distill.core.config import EMBEDDED_PREFIX, Config
from distill.core.errors import ConfigError, FairDistillError, ModelError

log = logging.getLogger(__name__)


STEP_BATCH_BYTES = 16 * 2**10
"""Memory of one drawn micro-batch besides its tokens: the `StepBatch`'s tensors and Python objects (about 16.5
KiB measured with twins on, 2 rows of 16 tokens: most of it per micro-batch, not per token)."""
STEP_TOKEN_BYTES = 256
"""Memory per row token of a drawn micro-batch: ids, masks and labels of the rows and their twins, and the twins'
alignment fields, int64 each (about 150 bytes measured; rounded up)."""


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def step_budget(cfg: Config) -> dict:
    """What one optimizer step and the run cost on one process: tokens, forward/backward passes, and the memory
    the step's inputs take (all `grad_accum` micro-batches are drawn before the first forward, so the step's
    token count is known)."""
    t, block = cfg.train, cfg.data.block_size
    tokens = t.grad_accum * t.micro_batch_size * block
    steps = t.max_steps if t.max_steps is not None else -(-t.max_tokens // tokens)
    return {
        "tokens": tokens,
        "memory": t.grad_accum * (STEP_BATCH_BYTES + t.micro_batch_size * block * STEP_TOKEN_BYTES),
        "steps": steps,
        "passes": steps * t.grad_accum,
    }


def _size(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


def step_budget_line(cfg: Config) -> str:
    """The step's and the run's size in one line (`distill check` and `train` print it)."""
    b, t = step_budget(cfg), cfg.train
    return (
        f"one optimizer step: {t.grad_accum} micro-batches x {t.micro_batch_size} rows x {cfg.data.block_size} "
        f"tokens = {b['tokens']:.3g} tokens per process, their inputs about {_size(b['memory'])} held at once; the "
        f"run: {b['steps']} steps, {b['passes']:.3g} forward/backward passes per process"
    )


def check_step_budget(cfg: Config) -> None:
    """Refuse a step whose inputs alone exceed this machine's memory."""
    b, t = step_budget(cfg), cfg.train
    ram = physical_memory()
    if ram is not None and b["memory"] > ram:
        raise ConfigError(
            f"train.grad_accum={t.grad_accum} x train.micro_batch_size={t.micro_batch_size} x data.block_size="
            f"{cfg.data.block_size}: one optimizer step draws all its micro-batches ({b['tokens']:.3g} tokens) before "
            f"its first forward, about {_size(b['memory'])} of inputs, more than this machine's {_size(ram)} of "
            "memory; lower train.grad_accum (a larger batch comes from train.micro_batch_size or more processes)"
        )


def _local_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}/config.json cannot be read ({type(e).__name__}: {e})") from None


def _depth_and_vocab(config: dict) -> tuple[int | None, int | None]:
    depth = config.get("num_hidden_layers", config.get("n_layer"))
    return depth, config.get("vocab_size")


def teacher_shape(cfg: Config) -> tuple[int | None, int | None, int | None]:
    """(layers, config vocab_size, tokenizer size or None) of the teacher, from its config.json and tokenizer files
    only; nothing is written. An embedded model reports the shape recorded for it (for SmolLM2 before its first
    conversion, the numbers its GGUF file holds); a hub model not in the local cache reports (None, None, None):
    it is checked when it loads."""
    from distill.models.embedded import EMBEDDED
    from distill.models.loading import check_local_dir, is_local_path

    name = cfg.teacher.name_or_path
    if name.startswith(EMBEDDED_PREFIX):
        key = name[len(EMBEDDED_PREFIX) :]
        converted = Path(cfg.data.cache_dir) / "embedded" / key
        if key == "tiny-random" or not (converted / "config.json").is_file():
            spec = EMBEDDED[key]
            return spec.get("layers"), spec.get("vocab"), None
        path = converted
    elif is_local_path(name):
        path = Path(name).expanduser()
        check_local_dir(path, "teacher.name_or_path")
    else:
        c = _hub_config(cfg)
        if c is None:
            return None, None, None
        return getattr(c, "num_hidden_layers", None), getattr(c, "vocab_size", None), None
    depth, vocab = _depth_and_vocab(_local_config(path))
    tokens = None
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        from distill.models.loading import load_tokenizer

        tokens = len(load_tokenizer(str(path)))
    return depth, vocab, tokens


def _hub_config(cfg: Config):
    """A hub teacher's config from the local cache, or None (offline and not cached: it is checked when it
    loads). Never its code: a config that needs it is read as None here."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(cfg.teacher.name_or_path, revision=cfg.teacher.revision)
    except Exception:
        log.info(
            "teacher %s: config not available here; it is checked when it loads", cfg.teacher.name_or_path
        )
        return None


def teacher_positions(cfg: Config) -> int | None:
    """The teacher's positions from its config.json (the recorded number for an embedded model), or None."""
    from distill.models.embedded import EMBEDDED_POSITIONS
    from distill.models.loading import is_local_path, positions

    name = cfg.teacher.name_or_path
    if name.startswith(EMBEDDED_PREFIX):
        return EMBEDDED_POSITIONS.get(name[len(EMBEDDED_PREFIX) :])
    if is_local_path(name):
        return positions(_local_config(Path(name).expanduser()))
    c = _hub_config(cfg)
    return positions(c) if c is not None else None


def remote_code_report(cfg: Config) -> list[str]:
    """What the teacher's own code (a local folder's `*.py` and `auto_map`) means for the run, read without
    running it: a problem when its architecture exists only in that code (its student could not be saved
    without it); otherwise a line saying whether it will run."""
    from distill.models.remote_code import library_arch, not_library_message, shipped_code

    name = cfg.teacher.name_or_path
    code = shipped_code(name)
    if not code:
        return []
    if not library_arch(code["model_type"]):
        return [not_library_message(name, code)]
    files = ", ".join(code["files"]) or "auto_map"
    if cfg.teacher.trust_remote_code:
        log.warning(
            "teacher %r ships its own code (%s) and teacher.trust_remote_code is true: train runs it once confirmed "
            "with --trust-remote-code; the student is saved as transformers' own %r architecture, without it",
            name,
            files,
            code["model_type"],
        )
    else:
        log.info(
            "teacher %r ships its own code (%s); with teacher.trust_remote_code false it loads with transformers' "
            "own %r code, and its code never runs",
            name,
            files,
            code["model_type"],
        )
    return []


def _student_depth(cfg: Config, teacher_depth: int | None) -> int | None:
    """The student's layer count as the recipe will build it, where it can be told before loading a model."""
    s = cfg.student
    if s.init == "teacher_layers":
        if s.layers:
            return len(s.layers)
        if teacher_depth is not None and s.prune.drop:
            return teacher_depth - s.prune.drop
        return None
    if s.init == "config":
        return s.num_layers or (teacher_depth // 2 if teacher_depth else None)
    return None


def _check_models(cfg: Config) -> None:
    from distill.models.loading import position_problems

    code_problems = remote_code_report(cfg)
    if code_problems:  # nothing else of such a teacher is read: its tokenizer could need its code
        raise ConfigError(code_problems)
    depth, vocab, tokens = teacher_shape(cfg)
    problems = position_problems(teacher_positions(cfg), cfg, f"teacher {cfg.teacher.name_or_path!r}")
    s = cfg.student
    if s.init == "teacher_layers" and depth is not None and s.layers:
        bad = [i for i in s.layers if i >= depth]
        if bad:
            problems.append(
                f"student.layers {s.layers}: the teacher has {depth} layers (0..{depth - 1}); {bad} do not exist"
            )
    student_depth = _student_depth(cfg, depth)
    if s.erase.rank > 0 and s.erase.layers and student_depth is not None:
        bad = [i for i in s.erase.layers if not -student_depth <= i < student_depth]
        if bad:
            problems.append(
                f"student.erase.layers {s.erase.layers}: the student has {student_depth} layers "
                f"(0..{student_depth - 1}, or -1..-{student_depth} from the top); {bad} do not exist"
            )
    if vocab is not None and tokens is not None and tokens > vocab:
        problems.append(
            f"teacher {cfg.teacher.name_or_path!r}: its tokenizer has {tokens} tokens but its config vocab_size is "
            f"{vocab}; save the model with its own tokenizer, or grow the embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and save it again"
        )
    if s.init == "pretrained" and s.path:
        from distill.models.loading import check_local_dir, is_local_path

        if is_local_path(s.path):
            p = Path(s.path).expanduser()
            check_local_dir(p, "student.path")
            _, student_vocab = _depth_and_vocab(_local_config(p))
            if vocab is not None and student_vocab is not None and student_vocab != vocab:
                problems.append(
                    f"teacher vocab ({vocab}) != student vocab ({student_vocab}): KD compares full next-token "
                    "distributions; use student.init: teacher_layers or a student trained with the teacher's tokenizer"
                )
    if problems:
        raise ConfigError(problems)


def check_run_folder(cfg: Config) -> None:
    """What `train` would refuse about the run folder, read without writing: another run holding it, or a
    recipe it does not belong to."""
    from distill.core.ownership import check_identity, lock_owner
    from distill.core.rundir import RunDir

    run = RunDir.for_config(cfg)
    owner = lock_owner(run)
    if owner is not None:
        raise FairDistillError(owner)
    check_identity(run, cfg)


def early_checks(cfg: Config) -> None:
    """What `train` refuses before it touches the run folder: the size of a step (printed)."""
    check_step_budget(cfg)
    log.info("%s", step_budget_line(cfg))


def preflight(cfg: Config, standalone: bool = False) -> None:
    """Run every check that needs no model weights; raise what was found (see the module docstring).
    `standalone` (`distill check`): also `early_checks` and `check_run_folder`, which `train` makes itself
    before it takes the run folder."""
    from distill.counterfactual.wordlists import load_lexicon, load_professions
    from distill.data.transfer import preflight as data_preflight
    from distill.evaluation.metrics.pronoun_probe import load_templates

    checks = [lambda: data_preflight(cfg.data)]
    if cfg.augment.mode != "off" or cfg.perturb.kind != "none":
        checks.append(lambda: load_lexicon(cfg.augment.pairs, cfg.augment.one_to_many, cfg.augment.names))
    if standalone:
        checks += [lambda: check_step_budget(cfg), lambda: check_run_folder(cfg)]
    checks += [
        lambda: load_professions(cfg.probe.professions),
        lambda: load_templates(cfg.probe.templates),
        lambda: _check_models(cfg),
    ]
    if cfg.probe.winogender:
        from distill.evaluation.metrics import winogender
        from distill.evaluation.stereotype import load_occupation_stats

        checks += [
            lambda: winogender.load_templates(cfg.probe.winogender),
            lambda: load_occupation_stats(cfg.probe.winogender),
        ]
    if cfg.probe.agreement:
        from distill.evaluation.metrics.pronoun_agreement import load_prompts

        checks.append(lambda: load_prompts(cfg.probe.agreement))
    found: list[FairDistillError] = []
    for check in checks:
        try:
            check()
        except ConfigError as e:
            found += [ConfigError(p) for p in e.problems]
        except FairDistillError as e:
            found.append(e)
    if len(found) == 1 and not isinstance(found[0], ConfigError):
        raise found[0]
    if found:
        raise ConfigError([str(e) for e in found], cfg.source)

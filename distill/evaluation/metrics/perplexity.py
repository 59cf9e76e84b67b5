"""`perplexity`: token-weighted perplexity over non-overlapping blocks of held-out text (`evaluation/scoring.py`):
a local file, BOLD's Wikipedia sentences (`eval/data/bold`, the real-text set no recipe trains on: `data.heldout`),
a hub dataset, or a run's own validation blocks (`val_blocks.safetensors`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from distill.core.errors import DataError
from distill.core.resources import resource_path
from distill.evaluation.registry import (
    Context,
    LoadedModel,
    MetricKind,
    Row,
    SeedRow,
    check_range,
    from_hub,
    register,
)

log = logging.getLogger(__name__)

WIKITEXT_HUB_ID = "Salesforce/wikitext"
WIKITEXT_CONFIG = "wikitext-103-raw-v1"


@dataclass
class PerplexityTask:
    """Token-weighted perplexity over non-overlapping blocks of held-out text."""

    metric: str = "perplexity"
    """The metric kind (see `registry.kinds()`)."""
    run_validation: bool = False
    """When the checkpoint is a run directory, use that run's own validation blocks (read from its
    `val_blocks.safetensors`) and their block size; otherwise, or when the run has no such file, fall back to
    `path` / the hub."""
    path: str | None = None
    """Local held-out text: .txt (documents separated by blank lines), .jsonl or .parquet (`text_field`), or BOLD's
    Wikipedia sentences (`eval/data/bold`, or one `*_wiki.json`), one document each; null loads `dataset` from the
    hub."""
    dataset: str = WIKITEXT_HUB_ID
    """Hub dataset used when `path` is null."""
    dataset_config: str | None = WIKITEXT_CONFIG
    """Configuration of the hub dataset."""
    split: str = "test"
    """Split of the hub dataset."""
    text_field: str = "text"
    """Column (hub, .jsonl, .parquet) holding the text."""
    join: str | None = None
    """Join all documents into one text with this separator (WikiText stores one line per row: use "");
    null separates documents with the eos token."""
    max_documents: int | None = None
    """Use only the first N documents (null: all)."""
    sample: int | None = None
    """Use a seeded random N of the documents, in their order (null: all). The first N of one seeded permutation,
    so a smaller sample is part of a larger one with the same seed."""
    seed: int = 0
    """Seeds `sample`."""
    block_size: int | None = None
    """Tokens per block (null: the model's context, at most 1024). Compare models only at the same size."""
    batch_size: int = 8
    """Blocks per forward pass."""


def check(where: str, task: PerplexityTask, problems: list[str]) -> None:
    check_range(problems, f"{where}.block_size", task.block_size, 2)


def read_texts(path: str, text_field: str) -> list[str]:
    """Documents of a local held-out file, read as the transfer set reads `data.files`
    (`data.documents.iter_file_documents`): text splits on blank lines; .jsonl/.json/.parquet read `text_field`. A
    folder or a `*_wiki.json` file gives BOLD's Wikipedia sentences (`data.heldout.wiki_sentences`)."""
    from distill.data.documents import iter_file_documents
    from distill.data.heldout import wiki_sentences

    p = resource_path(path)
    if p.is_dir() or p.name.endswith("_wiki.json"):
        return wiki_sentences(p)
    if not p.is_file():
        raise DataError(f"{path}: held-out text file not found")
    return list(
        iter_file_documents([p], text_field, field_hint="the task's text_field", files_hint="the task's path")
    )


def prepare(name: str, task: PerplexityTask) -> dict:
    from distill.evaluation._data import load_hub

    if task.path:
        texts, source = read_texts(task.path, task.text_field), task.path
    else:

        def load() -> list[str]:
            where = f"{task.dataset} ({task.dataset_config}, {task.split})"
            ds = load_hub(task.dataset, task.dataset_config, task.split, "set the task's path")
            if task.text_field not in ds.column_names:
                raise DataError(f"{where}: no column {task.text_field!r} (columns: {ds.column_names})")
            return list(ds[task.text_field])

        texts = from_hub(name, task, "path", load)
        source = f"{task.dataset}/{task.dataset_config}:{task.split}"
    from distill.data.heldout import sample_sentences

    texts = texts[: task.max_documents]
    if task.sample is not None:
        n_all = len(texts)
        texts = sample_sentences(texts, task.sample, task.seed)
        source = f"{source}: {len(texts):,} of {n_all:,} documents, seed {task.seed}"
    if task.join is not None:
        texts = [task.join.join(texts)]
    if not any(t.strip() for t in texts):
        raise DataError(f"task {name!r}: the held-out text from {source} is empty")
    return {"texts": texts, "source": source}


def run(name: str, task: PerplexityTask, data: dict, lm: LoadedModel, ctx: Context):
    from distill.evaluation.scoring import perplexity
    from distill.models.lm import max_positions

    if task.run_validation and ctx.run_blocks is not None:
        blocks = ctx.run_blocks
        result = perplexity(lm.model, lm.tokenizer, blocks, batch_size=task.batch_size, device=ctx.device)
        return {**result, "source": ctx.run_blocks_note, "block_size": int(blocks.shape[1])}, []
    block_size = task.block_size
    limit = max_positions(lm.model)
    if block_size is not None and limit is not None and block_size > limit:
        log.warning(
            "%s: block_size %d is above the model's context (%d); using %d", name, block_size, limit, limit
        )
        block_size = limit
    result = perplexity(
        lm.model,
        lm.tokenizer,
        data["texts"],
        block_size=block_size,
        batch_size=task.batch_size,
        device=ctx.device,
    )
    source = data["source"]
    if task.run_validation:
        source = f"{source} ({ctx.run_blocks_note})"
    return {**result, "source": source, "block_size": block_size}, []


def cost(task: PerplexityTask, data: dict, lm: LoadedModel, ctx: Context) -> tuple[int, int]:
    """(0, tokens scored): the run's validation blocks, or the held-out text as the model's tokenizer cuts it."""
    if task.run_validation and ctx.run_blocks is not None:
        return 0, int(ctx.run_blocks.numel())
    return 0, sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in data["texts"])


def headline(result: dict) -> dict:
    return {"ppl": result.get("ppl"), "tokens": result.get("tokens")}


def sizes(name: str, r: dict) -> str | None:
    return f"`{name}`: {r['tokens']:,} tokens ({r.get('source', '')})" if r.get("tokens") else None


KIND: Any = register(
    MetricKind(
        name="perplexity",
        settings=PerplexityTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=(Row("ppl", "perplexity", "lower"),),
        hidden=("tokens",),
        files=("path",),
        check=check,
        needs=lambda task: frozenset({"run_blocks"} if task.run_validation else ()),
        local_hint="a local .txt (documents separated by blank lines), .jsonl or .parquet file of held-out text",
        sizes=sizes,
        cost=cost,
        seed_rows=(SeedRow("ppl", "perplexity"),),
    )
)

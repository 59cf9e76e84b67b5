"""Transfer text -> token blocks.

Three sources: a Hugging Face dataset, local files (.txt, .jsonl, .parquet, globs), or `teacher_samples` (the
teacher continues project-written opening lines: sequence-level KD). Documents are tokenized, joined with EOS and
packed into fixed-length blocks; a seeded share is held out for validation. Everything expensive (sampling,
tokenization) is cached under `data.cache_dir`, keyed by a hash of what produced it, so a rerun reuses it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from distill.core.config import Config, DataConfig
from distill.core.errors import DataError, FairDistillError
from distill.core.files import (
    atomic_save_tensors,
    atomic_write,
    digest,
    model_fingerprint,
    not_a_file,
    read_jsonl,
    tokenizer_fingerprint,
)
from distill.core.resources import resource_glob, resource_path
from distill.data.documents import check_text, iter_file_documents
from distill.data.heldout import refuse_documents, refuse_prompts

log = logging.getLogger(__name__)


def data_seed(cfg: Config) -> int:
    """Seed of the transfer set and the validation split: `data.seed`, or `run.seed` when that is null."""
    return cfg.run.seed if cfg.data.seed is None else cfg.data.seed


# --------------------------------------------------------------------------------------------------------------
# Documents


def read_prompts(path: str | Path) -> list[str]:
    p = resource_path(path)
    if not p.is_file():
        raise DataError(f"prompt file {str(path)!r} does not exist")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise DataError(
            f"prompt file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise DataError(f"prompt file {str(path)!r} holds no prompts (one per line; '#' starts a comment)")
    return prompts


def _expand_files(patterns: list[str]) -> list[Path]:
    """The files `data.files` names. A path given as is must be a regular file, and so must what a glob
    matches, folders aside (`data/*` may match subfolders): a FIFO would block the read, a device or a looping
    link would be read as nothing."""
    import glob as _glob

    files: list[Path] = []
    for pat in patterns:
        matches = resource_glob(pat) or _links(pat)
        if not matches:
            raise DataError(f"data.files: {pat!r} matches no file; check the path or glob")
        literal = not _glob.has_magic(pat)
        kept = []
        for m in matches:
            why = not_a_file(m)
            if why is None:
                kept.append(m)
            elif literal or why != "is a folder, not a file":
                hint = (
                    f"; give the files in it, e.g. {str(Path(pat) / '*.txt')!r}"
                    if why.startswith("is a folder")
                    else ""
                )
                raise DataError(
                    f"data.files: {str(m)!r} {why}{hint}; data.files takes text, JSON Lines or Parquet files"
                )
        if not kept:
            raise DataError(
                f"data.files: {pat!r} matches only folders ({', '.join(map(str, matches[:3]))}); give files"
            )
        files += kept
    return files


def _links(pattern: str) -> list[Path]:
    """A path given as is that is a symbolic link to nothing (or to itself): glob skips it, and it is named."""
    p = Path(pattern).expanduser()
    return [p] if p.is_symlink() else []


def _scan_file(path: Path, text_field: str) -> tuple[int, int]:
    """Read every record of one local file as training will, without a tokenizer: (documents with text, bytes of
    text). Raises the same `DataError`s as `iter_file_documents`, one for a file with no text at all, and one for
    a document holding held-out text (`data.heldout`)."""
    docs = size = 0
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if text_field not in schema.names:
            raise DataError(f"{path}: no column {text_field!r} (found {schema.names}); set data.text_field")
        kind = schema.field(text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(
                f"{path}: column {text_field!r} must hold text, got {kind}; set data.text_field to a text column"
            )
        column = pq.read_table(path, columns=[text_field]).column(text_field)
        if column.null_count:
            raise DataError(
                f"{path}: column {text_field!r} has {column.null_count} null value(s); drop those rows"
            )
        values = column.to_pylist()
    else:
        values = iter_file_documents([path], text_field)
    for value in refuse_documents(values, f"data.files: {path}", "data.files"):
        docs, size = docs + bool(value.strip()), size + len(value.encode("utf-8"))
    if docs == 0:
        raise DataError(
            f"{path}: holds no text (empty, or whitespace only); add text or drop it from data.files"
        )
    return docs, size


def preflight(cfg: DataConfig) -> None:
    """Every check of the transfer text that needs no model, run before one loads: the files exist, every record
    parses and holds text, no file is empty, and the text can fill two blocks (one to train, one to validate).
    Without a tokenizer the last is an upper bound (a token covers at least one byte); `split_blocks` checks the
    exact count after tokenizing. No document or prompt may hold held-out text (`data.heldout`: BOLD's Wikipedia
    sentences and prompts)."""
    if cfg.source == "files":
        docs = size = 0
        for path in _expand_files(cfg.files):
            n, b = _scan_file(path, cfg.text_field)
            docs, size = docs + n, size + b
        most = size + docs  # each document adds one EOS
        if most < 2 * cfg.block_size:
            raise DataError(
                f"data.files hold {size} bytes of text, at most {most} tokens: too short for 2 blocks of "
                f"data.block_size={cfg.block_size} tokens (one to train, one to validate); add text or lower "
                "data.block_size"
            )
    elif cfg.source == "teacher_samples":
        refuse_prompts(read_prompts(cfg.prompts), f"data.prompts: {cfg.prompts}")


def iter_hf_documents(cfg: DataConfig) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.name, cfg.config_name, split=cfg.split, streaming=cfg.streaming)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
        raise DataError(
            f"dataset {cfg.name!r} (config {cfg.config_name!r}, split {cfg.split!r}) could not be loaded: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Offline? Use data.source: files with a local copy"
        ) from None
    columns = ds.column_names if getattr(ds, "column_names", None) else None
    if columns is not None and cfg.text_field not in columns:
        raise DataError(
            f"dataset {cfg.name!r} has no column {cfg.text_field!r} (columns: {columns}); set data.text_field"
        )
    for i, row in enumerate(ds):
        if cfg.max_documents is not None and i >= cfg.max_documents:
            break
        if cfg.text_field not in row:
            raise DataError(
                f"dataset {cfg.name!r} row {i} has no field {cfg.text_field!r} (fields: {list(row)}); set data.text_field"
            )
        yield check_text(row[cfg.text_field], f"dataset {cfg.name!r} row {i}", cfg.text_field)


def sample_teacher_documents(cfg: Config, teacher, tokenizer, device) -> list[str]:
    """The teacher continues each opening line `samples_per_prompt` times (seeded); cached by content."""
    from distill.core.precision import active_autocast_dtype
    from distill.models.sampling import generate

    d = cfg.data
    prompts = read_prompts(d.prompts)
    # bf16 samples are other samples: they get their own entry (float32 keys are unchanged)
    amp = active_autocast_dtype(device)
    key = digest(
        ({"autocast": str(amp)} if amp is not None else {})
        | {
            "teacher": cfg.teacher.name_or_path,
            "dtype": cfg.teacher.dtype,
            "prompts": prompts,
            "n": d.samples_per_prompt,
            "len": d.sample_max_new_tokens,
            "top_p": d.sample_top_p,
            "temp": d.sample_temperature,
            "seed": data_seed(cfg),
            "weights": model_fingerprint(teacher),
        }
    )
    cache = Path(d.cache_dir) / "samples" / f"{key}.jsonl"
    if cache.is_file():
        docs = [r["text"] for r in read_jsonl(cache)]
        log.info("transfer set: %d teacher samples from cache %s", len(docs), cache)
        return docs
    log.info(
        "transfer set: sampling %d x %d continuations of %d tokens from the teacher",
        len(prompts),
        d.samples_per_prompt,
        d.sample_max_new_tokens,
    )
    outs = generate(
        teacher,
        tokenizer,
        prompts,
        n_per_prompt=d.samples_per_prompt,
        max_new_tokens=d.sample_max_new_tokens,
        top_p=d.sample_top_p,
        temperature=d.sample_temperature,
        seed=data_seed(cfg),
        batch_size=d.sample_batch_size,
        device=device,
    )
    docs = [p + c for p, conts in zip(prompts, outs) for c in conts]
    atomic_write(cache, "".join(json.dumps({"text": t}) + "\n" for t in docs))
    return docs


# --------------------------------------------------------------------------------------------------------------
# Tokenize and pack


def pack(token_lists: Iterable[list[int]], block_size: int, eos_id: int) -> torch.Tensor:
    """Join documents with EOS and cut into full blocks: [N, block_size] int64. The ragged tail is dropped."""
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        stream.append(eos_id)
    n = len(stream) // block_size
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def _tokenize_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _batches(items: Iterable, size: int) -> Iterator[list]:
    buf: list = []
    for x in items:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def tokenize_documents(
    docs: Iterable[str], tokenizer, batch: int = 256, workers: int = 0
) -> Iterator[list[int]]:
    """Token ids of each document, in order; `workers` > 1 tokenizes batches in that many processes."""
    from distill.core.parallel import ordered_map

    for ids in ordered_map(_tokenize_batch, _batches(docs, batch), workers, tokenizer):
        yield from ids


def split_blocks(
    blocks: torch.Tensor, val_fraction: float, max_val: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded shuffle, then the first `val_fraction` (1..max_val blocks) is validation. Needs >= 2 blocks."""
    n = blocks.shape[0]
    if n < 2:
        raise DataError(
            f"the transfer text packs into {n} block(s) of {blocks.shape[1] if blocks.ndim == 2 else '?'} tokens; "
            "at least 2 are needed (one to train, one to validate): add text or lower data.block_size"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = min(max_val, max(1, round(n * val_fraction)), n - 1)
    return blocks[perm[n_val:]].clone(), blocks[perm[:n_val]].clone()


def build_blocks(cfg: Config, tokenizer, teacher=None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (train_blocks, val_blocks), each [N, block_size] int64; cached by content."""
    from safetensors.torch import load_file

    d = cfg.data
    if d.source == "teacher_samples":
        if teacher is None:
            raise AssertionError("teacher_samples needs the teacher")
        docs: list[str] | Iterator[str] = sample_teacher_documents(cfg, teacher, tokenizer, device)
        source_key = digest(docs)
    elif d.source == "files":
        files = _expand_files(d.files)
        source_key = digest(
            [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files] + [d.text_field]
        )
        docs = iter_file_documents(files, d.text_field)
    else:
        source_key = digest([d.name, d.config_name, d.split, d.text_field, d.max_documents])
        docs = iter_hf_documents(d)
    key = digest(
        [
            source_key,
            tokenizer_fingerprint(tokenizer),
            d.block_size,
            d.val_fraction,
            d.max_val_blocks,
            data_seed(cfg),
        ]
    )
    cache = Path(d.cache_dir) / "blocks" / f"{key}.safetensors"
    if cache.is_file():
        t = load_file(str(cache))
        log.info(
            "data: %d train / %d validation blocks from cache %s",
            t["train"].shape[0],
            t["val"].shape[0],
            cache,
        )
        return t["train"], t["val"]
    n_docs = 0

    def counted(it):
        nonlocal n_docs
        for doc in it:
            n_docs += 1
            yield doc

    t0 = time.perf_counter()
    blocks = pack(
        tokenize_documents(counted(docs), tokenizer, workers=d.num_workers),
        d.block_size,
        tokenizer.eos_token_id,
    )
    dt = time.perf_counter() - t0
    if n_docs == 0:
        raise DataError(
            f"the {d.source} transfer text is empty (0 documents); check data.files / data.name / data.split"
        )
    train, val = split_blocks(blocks, d.val_fraction, d.max_val_blocks, data_seed(cfg))
    atomic_save_tensors({"train": train, "val": val}, cache, {"documents": str(n_docs)})
    log.info(
        "data: %d documents -> %d train / %d validation blocks of %d tokens in %.1f s (%.0f tokens/s, %d workers; "
        "cached %s)",
        n_docs,
        train.shape[0],
        val.shape[0],
        d.block_size,
        dt,
        blocks.numel() / max(dt, 1e-9),
        max(1, d.num_workers),
        cache,
    )
    return train, val


class MicroBatches:
    """Deterministic, resumable micro-batches of block indices for one process.

    Epoch e shuffles with seed + e; each global micro-batch of `micro_batch_size * world` blocks is split so
    process r takes its own slice: no overlap, and the same global batches whatever the process count.
    The position (epoch, index) is all a checkpoint needs to continue without seeing a batch twice.
    """

    def __init__(self, n: int, micro_batch_size: int, rank: int, world: int, seed: int):
        self.n, self.mbs, self.rank, self.world, self.seed = n, micro_batch_size, rank, world, seed
        self.per_epoch = n // (micro_batch_size * world)
        if self.per_epoch == 0:
            raise FairDistillError(
                f"{n} training blocks cannot fill one micro-batch of {micro_batch_size} x {world} processes; "
                "lower train.micro_batch_size or add data"
            )
        self.epoch, self.index = 0, 0

    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self):
        perm = self._perm(self.epoch)
        while True:
            if self.index >= self.per_epoch:
                self.epoch, self.index = self.epoch + 1, 0
                perm = self._perm(self.epoch)
            g = self.index * self.mbs * self.world + self.rank * self.mbs
            self.index += 1
            yield perm[g : g + self.mbs].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.index = int(s["epoch"]), int(s["index"])


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Labels for position i are token i+1; the last position and padding get -100. [B, T] -> [B, T]."""
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = input_ids[:, 1:]
    if attention_mask is not None:
        valid_next = torch.zeros_like(attention_mask, dtype=torch.bool)
        valid_next[:, :-1] = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
        labels = labels.masked_fill(~valid_next, -100)
    return labels

"""The counterfactual twins of the training blocks, and one micro-batch as the step sees it (`StepBatch`).

`Counterfactuals` builds the twin x~ of a row (`distill.counterfactual.align`), precomputes the twins of every training
block once into a table on disk (`TwinTable`, read a micro-batch at a time) and draws which rows the student
trains on (`augment.p`). `make_step_batch` decides everything a micro-batch needs before any forward, so the
step's token count is known first. The teacher (`distill.teacher.targets`) and the trainer both read twins from here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.core.config import Config
from distill.core.files import atomic_save_tensors, digest, tensor_digest, tokenizer_fingerprint
from distill.core.resources import resource_path
from distill.counterfactual import her_decide
from distill.counterfactual.exchange import Exchange
from distill.counterfactual.perturb import twin_rows_for
from distill.data.transfer import next_token_labels

log = logging.getLogger("distill")


def build_twins(cf: Counterfactuals, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The twins of rows x [B, T] (`distill.counterfactual.align.twin_batch`)."""
    from distill.counterfactual.align import twin_batch

    return twin_batch(cf.builder, x, cf.pad_id)


class TwinTable:
    """Precomputed twins of the training blocks, read a micro-batch at a time through safetensors' memory map."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        self._f = safe_open(str(path), framework="pt")

    def rows(self, blocks: list[int]) -> dict[str, torch.Tensor]:
        out = {}
        for k in self._f.keys():
            sl = self._f.get_slice(k)
            v = torch.cat([sl[b : b + 1] for b in blocks])
            out[k] = v if v.dtype == torch.bool else v.long()
        return out


class Counterfactuals:
    """Builds the twins of a micro-batch and decides which rows the student trains on."""

    def __init__(self, cfg: Config, tokenizer, rank: int = 0, world: int = 1):
        from distill.counterfactual.align import CounterfactualBuilder
        from distill.counterfactual.exchange import g_word_groups, g_word_pairs
        from distill.counterfactual.swap import Swapper
        from distill.counterfactual.wordlists import load_lexicon

        a = cfg.augment
        lexicon = load_lexicon(a.pairs, a.one_to_many, a.names)
        self.swapper = Swapper(lexicon, use_names=a.names is not None)
        self.builder = CounterfactualBuilder(
            tokenizer,
            self.swapper,
            g_word_pairs(lexicon, use_names=a.names is not None),
            g_word_groups(lexicon),
        )
        self.pad_id = tokenizer.pad_token_id
        self.mode, self.p = a.mode, a.p
        self.kind, self.lam = cfg.perturb.kind, cfg.perturb.lam
        self.generator = torch.Generator().manual_seed(cfg.run.seed + 7919)
        self.rank, self.world = rank, world
        self.table: TwinTable | None = None
        self._exchange: dict[str, Exchange] = {}

    def twins(self, x: torch.Tensor, blocks: list[int] | None = None) -> dict[str, torch.Tensor]:
        """x: [B, T] -> twin ids/mask [B, T], align and inverse alignment [B, T], changed [B] (bool). With the
        rows' block indices and a `precompute`d table, read from the table instead of built."""
        if blocks is not None and self.table is not None:
            return self.table.rows(blocks)
        return build_twins(self, x)

    def precompute(self, cfg: Config, blocks: torch.Tensor) -> TwinTable:
        """Build the twins of every training block once, in `data.num_workers` processes, cached on disk by
        content (blocks, word lists, tokenizer); each step then reads its rows."""
        from distill.core.parallel import ordered_map

        a = cfg.augment
        words = [
            resource_path(f).read_text(encoding="utf-8") if f else None
            for f in (a.pairs, a.one_to_many, a.names)
        ]
        key = digest(
            [
                "twins-2",
                tensor_digest(blocks),
                list(blocks.shape),
                words,
                tokenizer_fingerprint(self.builder.tokenizer),
            ]
            + her_decide.key_part(cfg, self.builder)
        )
        path = Path(cfg.data.cache_dir) / "twins" / f"{key}.safetensors"
        if not path.is_file():
            t0 = time.perf_counter()
            chunks = (blocks[i : i + 64] for i in range(0, blocks.shape[0], 64))
            parts = list(ordered_map(build_twins, chunks, cfg.data.num_workers, self))
            table = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            table = {k: v if v.dtype == torch.bool else v.to(torch.int32) for k, v in table.items()}
            atomic_save_tensors(table, path)
            dt = time.perf_counter() - t0
            log.info(
                "twins of %d blocks built in %.1f s (%.0f tokens/s, %d workers), %d changed; cached %s",
                blocks.shape[0],
                dt,
                blocks.numel() / max(dt, 1e-9),
                max(1, cfg.data.num_workers),
                int(table["changed"].sum()),
                path,
            )
        self.table = TwinTable(path)
        return self.table

    def exchange(self, device) -> Exchange:
        """The builder's exchange on `device`, moved once."""
        key = str(device)
        if key not in self._exchange:
            self._exchange[key] = self.builder.exchange.to(device)
        return self._exchange[key]

    def select(self, changed: torch.Tensor) -> torch.Tensor:
        """Rows whose twin the student sees (augment p); drawn for every row so the stream does not depend on data.
        Drawn for the whole global micro-batch (B rows per process), each process keeping its own slice, as
        `MicroBatches` slices the rows: the same choices as one process, not the same draws repeated per process."""
        B = changed.shape[0]
        draws = torch.rand(B * self.world, generator=self.generator)
        draw = draws[self.rank * B : (self.rank + 1) * B] < self.p
        return changed & draw if self.mode != "off" else torch.zeros_like(changed)


@dataclass
class StepBatch:
    """Everything one micro-batch needs: the teacher's rows (x, then the twins of `twin_rows`), the student's rows
    and labels, and the twins' alignment and switches the targets are assembled from."""

    x: torch.Tensor
    """[B, T] the training blocks' rows."""
    x_mask: torch.Tensor
    student_ids: torch.Tensor
    """[B + k, T] what the student trains on: x, with the selected twins replacing or appended to it."""
    student_mask: torch.Tensor
    labels: torch.Tensor
    """[B + k, T] next-token labels of the student's rows, -100 where no loss is taken."""
    blocks: list[int] | None = None
    """The rows' training-block indices (the twin table and the teacher cache are read by them)."""
    twins: dict[str, torch.Tensor] | None = None
    """`distill.counterfactual.align.TWIN_FIELDS` of every row; None without counterfactuals."""
    selected: torch.Tensor | None = None
    """[B] bool: rows whose twin the student sees."""
    twin_rows: torch.Tensor | None = None
    """[B] bool: rows whose twin the teacher runs on (every changed row for the twin kinds, else the selected)."""

    @property
    def changed_frac(self) -> float:
        return float(self.twins["changed"].float().mean()) if self.twins is not None else 0.0

    @property
    def tokens(self) -> int:
        """Positions that take a loss."""
        return int((self.labels != -100).sum())

    def teacher_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows the teacher runs on, ids and mask [B + k, T]: x, then the twins of `twin_rows`."""
        if self.twin_rows is None or not self.twin_rows.any():
            return self.x, self.x_mask
        rows = self.twin_rows
        return torch.cat([self.x, self.twins["twin_ids"][rows]]), torch.cat(
            [self.x_mask, self.twins["twin_mask"][rows]]
        )

    def twin_blocks(self) -> list[int]:
        """The block indices of `twin_rows`, in row order."""
        if self.twin_rows is None:
            return []
        return [b for b, t in zip(self.blocks, self.twin_rows.tolist()) if t]


def make_step_batch(
    x: torch.Tensor, cf: Counterfactuals | None, blocks: list[int] | None = None
) -> StepBatch:
    """The `StepBatch` of rows x [B, T], decided before any forward so the step's token count is known. `blocks`:
    the rows' training-block indices, to read precomputed twins (`Counterfactuals.precompute`)."""
    mask = torch.ones_like(x)
    if cf is None:
        return StepBatch(x, mask, x, mask, next_token_labels(x, mask), blocks)
    tw = cf.twins(x, blocks)
    selected = cf.select(tw["changed"])
    twin_rows = twin_rows_for(cf.kind, tw["changed"], selected)
    if cf.mode == "append":
        sid = torch.cat([x, tw["twin_ids"][selected]])
        smask = torch.cat([mask, tw["twin_mask"][selected]])
    elif cf.mode == "replace":
        sid = torch.where(selected[:, None], tw["twin_ids"], x)
        smask = torch.where(selected[:, None], tw["twin_mask"], mask)
    else:
        sid, smask = x, mask
    return StepBatch(x, mask, sid, smask, next_token_labels(sid, smask), blocks, tw, selected, twin_rows)

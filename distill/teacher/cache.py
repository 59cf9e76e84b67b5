"""Cached teacher targets (`teacher.cache: <dir>`): the teacher runs once per training block, not once per step.

For every training block x, and for the twin x~ of every block that has something to swap, the cache keeps one of
two things (`teacher.cache_format`):

- `hidden` (default): the teacher's final hidden state at each position (after its last norm: what its output
  projection reads), H numbers per token, stored in the dtype that projection multiplies in: float32 for a
  float32 teacher without autocast, bf16 under bf16 autocast (half the bytes, and nothing lost: autocast rounds
  the state to bf16 before the matmul anyway) or for a bf16 teacher. A step forms the teacher's logits with the
  teacher's own output projection in that same dtype, so the targets are exact: the live teacher's in the same
  precision, up to the rounding of one matmul (float32: ~1e-6 relative; bf16: one bf16 step of a logit, the
  rounding of its product), for every `perturb` kind. With plain KD the fused loss forms them a chunk at a time
  and no [N, V] teacher tensor exists. Checked at build time, at the tolerance of that dtype: a model whose logits
  are not its output projection of that state (soft-capping, scaling) is refused with the fix (`topk`).
- `topk`: the teacher's log-probabilities at the KD temperature on the top `teacher.cache_top_k` tokens of each
  position and on every token of the gendered vocabulary G (so the perturbation stays exact on G), plus the log of
  the mass left over and how many tokens share it. A step rebuilds dense log-probabilities (the left-over mass
  spread evenly: exact on the kept tokens, a distribution that sums to 1). Any model; an approximation whose KL
  to the full targets `benchmarks/bench_teacher_cache.py` reports (large at T = 2, where the tail holds much mass).

Either way the step hands the result to the same target assembly as a live teacher (`distill.teacher.targets`). The twins
come from the run's twin table (`distill.counterfactual.twins`), built from the word lists for every block whatever the recipe, so
the cache serves every `augment` and `perturb` setting, every seed and every student that shares the teacher, the
transfer blocks, the word lists and the temperature (and the run's autocast precision: bf16 targets are other
targets); its file name is a digest of those, and a cache that does not match them is never read.

One safetensors file per digest, read through safetensors' memory map one row at a time: a run holds only the
rows of its current micro-batch. Written to a temporary name and renamed, so an interrupted build leaves nothing
that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from distill.core.errors import FairDistillError
from distill.core.files import atomic_write, digest, model_fingerprint, tensor_digest, tokenizer_fingerprint
from distill.core.precision import active_autocast_dtype
from distill.counterfactual import her_decide

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(
    cfg, teacher, tokenizer, train_blocks: torch.Tensor, mixed_precision: str = "no", builder=None
) -> str:
    """The cache's digest. `mixed_precision`: the run's resolved autocast setting ("no" keeps the keys that float32
    caches have always had). `builder`: the twin builder, holding the teacher's her/his decisions
    (`augment.her_decider: teacher`)."""
    words = []
    a = cfg.augment
    for path in (a.pairs, a.one_to_many, a.names):
        words.append(Path(path).read_text(encoding="utf-8") if path else None)
    precision = [] if mixed_precision == "no" else [f"autocast:{mixed_precision}"]
    return digest(
        precision
        + [
            CACHE_VERSION,
            model_fingerprint(teacher),
            tokenizer_fingerprint(tokenizer),
            tensor_digest(train_blocks),
            list(train_blocks.shape),
            cfg.kd.temperature,
            cfg.teacher.cache_format,
            cfg.teacher.cache_top_k if cfg.teacher.cache_format == "topk" else None,
            words,
        ]
        + her_decide.key_part(cfg, builder)
    )


def compress(logp: torch.Tensor, k: int, g_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dense log-probabilities [R, T, V] -> the cached fields (top-k ids and values, G values, left-over mass)."""
    k = min(k, logp.shape[-1])
    top_lp, top_idx = logp.topk(k, dim=-1)
    rest = logp.scatter(-1, top_idx, float("-inf"))
    if g_idx.numel():
        rest[..., g_idx] = float("-inf")
    return {
        "top_idx": top_idx.to(torch.int32),
        "top_lp": top_lp.float(),
        "g_lp": logp[..., g_idx].float(),
        "rest_lp": torch.logsumexp(rest, dim=-1).float(),
        "n_rest": torch.isfinite(rest).sum(-1).to(torch.int32),
    }


def expand(fields: dict[str, torch.Tensor], g_idx: torch.Tensor, vocab: int) -> torch.Tensor:
    """The cached fields of R rows -> dense log-probabilities [R, T, V] (kept tokens exact, the rest uniform)."""
    n_rest = fields["n_rest"].float()
    fill = torch.where(n_rest > 0, fields["rest_lp"] - n_rest.clamp(min=1).log(), float("-inf"))
    dense = fill.unsqueeze(-1).expand(*fill.shape, vocab).clone()
    if g_idx.numel():
        dense[..., g_idx] = fields["g_lp"]
    dense.scatter_(-1, fields["top_idx"].long(), fields["top_lp"])
    return dense


def bytes_per_token(k: int, g: int) -> int:
    """Bytes one cached position costs: top-k ids (int32) and values (float32), G values, rest mass and count."""
    return 4 * k + 4 * k + 4 * g + 4 + 4


FIELDS = ("top_idx", "top_lp", "g_lp", "rest_lp", "n_rest")
HIDDEN_FIELDS = ("hidden",)


def teacher_head(teacher) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A detached copy of the teacher's output projection (weight [V, H], bias), taken before any sharding."""
    head = teacher.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise FairDistillError(
            f"{type(teacher).__name__} exposes no output projection; set teacher.cache_format=topk"
        )
    bias = getattr(head, "bias", None)
    return head.weight.detach().clone(), (bias.detach().clone() if bias is not None else None)


def head_logits(hidden: torch.Tensor, head: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    """The teacher's logits [..., V] of its final hidden states [..., H], in the head's dtype (pass a bf16 head
    for a bf16 cache: that is how the teacher's lm_head multiplied under autocast)."""
    w, b = head
    h = hidden.to(w.device, w.dtype)
    return h @ w.t() if b is None else h @ w.t() + b.to(w.dtype)


def head_tolerance(dtype: torch.dtype, scale: float) -> float:
    """How far a recomputed logit may be from the model's own in `dtype`: 1e-3 (float32) or two steps of the
    dtype's rounding (bf16: 2^-6, fp16: 2^-9), relative to max(1, the largest |logit|). Soft-capping or scaling
    moves logits by far more."""
    return max(1e-3, 2 * torch.finfo(dtype).eps) * max(1.0, scale)


class TeacherCache:
    """Reads the cached targets of a micro-batch: `log_probs(blocks, twin_blocks)` -> [B + k, T, V]."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        try:
            self._f = safe_open(str(path), framework="pt")
            self.g_idx = self._f.get_tensor("g_idx")
            self.twin_of = self._f.get_tensor("twin_of")
            meta = self._f.metadata() or {}
        except Exception as e:  # a truncated or foreign file
            raise FairDistillError(
                f"teacher cache {path} cannot be read ({e}); delete it and it is rebuilt on the next run"
            ) from e
        self.meta = json.loads(meta.get("fairdistill", "{}"))
        self.k = int(self.meta.get("top_k", 0))
        self.vocab = int(self.meta.get("vocab", 0))
        self.format = self.meta.get("format", "topk")
        self.temperature = float(self.meta.get("temperature", 1.0))
        self.dtype = getattr(torch, self.meta.get("dtype", "float32"))
        """What the hidden states are stored in; the step casts the teacher's head to it (`hidden` format)."""
        if self.meta.get("version") != CACHE_VERSION or self.vocab <= 0:
            raise FairDistillError(
                f"teacher cache {path} was written by another version of fairdistill; delete it and it is rebuilt"
            )

    def _rows(self, prefix: str, rows: list[int]) -> dict[str, torch.Tensor]:
        out = {}
        for name in HIDDEN_FIELDS if self.format == "hidden" else FIELDS:
            sl = self._f.get_slice(f"{prefix}_{name}")
            out[name] = torch.cat([sl[r : r + 1] for r in rows]) if rows else None
        return out

    def _twin_rows(self, twin_blocks: list[int]) -> list[int]:
        twin_rows = [int(self.twin_of[b]) for b in twin_blocks]
        if any(r < 0 for r in twin_rows):
            bad = [b for b, r in zip(twin_blocks, twin_rows) if r < 0]
            raise FairDistillError(
                f"teacher cache {self.path} holds no twin for blocks {bad[:5]}: it was built with other word lists; "
                "delete it and it is rebuilt"
            )
        return twin_rows

    def hidden(self, blocks: list[int], twin_blocks: list[int]) -> torch.Tensor:
        """`hidden` format: the teacher's final hidden states [B + k, T, H] of the rows, x rows first."""
        twin_rows = self._twin_rows(twin_blocks)
        parts = [self._rows("x", blocks)["hidden"]]
        if twin_rows:
            parts.append(self._rows("t", twin_rows)["hidden"])
        return torch.cat(parts)

    def log_probs(
        self,
        blocks: list[int],
        twin_blocks: list[int],
        head: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Dense log-probabilities at the KD temperature for the x rows of `blocks` then the twins of
        `twin_blocks`, in that order. The `hidden` format needs the teacher's output projection (`teacher_head`)."""
        if self.format == "hidden":
            if head is None:
                raise AssertionError("a hidden-state cache needs the teacher's head")
            logits = head_logits(self.hidden(blocks, twin_blocks), head)
            return torch.log_softmax(logits.float() / self.temperature, dim=-1)
        twin_rows = self._twin_rows(twin_blocks)
        parts = [expand(self._rows("x", blocks), self.g_idx, self.vocab)]
        if twin_rows:
            parts.append(expand(self._rows("t", twin_rows), self.g_idx, self.vocab))
        return torch.cat(parts)


def _check_head(teacher, h: torch.Tensor, head, logits: torch.Tensor, dtype: torch.dtype) -> None:
    """Refuse a teacher whose logits are not its output projection of its last hidden state (at `dtype`'s
    tolerance): a hidden-state cache could not rebuild its targets."""
    z = head_logits(h, head).float()
    ref = logits.float()
    err = float((z - ref).abs().max())
    tol = head_tolerance(dtype, float(ref.abs().max()))
    if err > tol:
        raise FairDistillError(
            f"{type(teacher).__name__}'s logits are not its output projection of its last hidden state "
            f"(max difference {err:.3g}, {str(dtype).split('.')[-1]} tolerance {tol:.3g}: "
            "soft-capping or scaling?); set teacher.cache_format=topk"
        )


class _Store:
    """The cached fields of the rows the teacher has run on so far, x rows ("x_*") and twins ("t_*")."""

    def __init__(
        self, teacher, fmt: str, temperature: float, top_k: int, g_idx: torch.Tensor, device, autocast
    ):
        self.teacher, self.fmt, self.temperature, self.top_k, self.g_idx = (
            teacher,
            fmt,
            temperature,
            top_k,
            g_idx,
        )
        self.device, self.autocast, self.vocab = device, autocast, 0
        fields = HIDDEN_FIELDS if fmt == "hidden" else FIELDS
        self.store: dict[str, list[torch.Tensor]] = {f"{p}_{n}": [] for p in ("x", "t") for n in fields}
        head = teacher_head(teacher) if fmt == "hidden" else None
        with autocast():  # the dtype the teacher's lm_head multiplies in: autocast's, else its weight's
            self.dtype = active_autocast_dtype(device) or (
                head[0].dtype if head is not None else torch.float32
            )
        self.head = None if head is None else tuple(t.to(self.dtype) if t is not None else None for t in head)

    def add(self, prefix: str, ids: torch.Tensor, mask: torch.Tensor) -> None:
        with self.autocast():
            out = self.teacher(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                output_hidden_states=self.fmt == "hidden",
            )
        self.vocab = out.logits.shape[-1]
        if self.fmt == "hidden":
            h = out.hidden_states[-1].to(self.dtype)
            if not self.store["x_hidden"]:  # the first batch: are the logits the head of this state?
                _check_head(self.teacher, h, self.head, out.logits, self.dtype)
            self.store[f"{prefix}_hidden"].append(h.cpu())
            return
        logp = torch.log_softmax(out.logits.float() / self.temperature, dim=-1).cpu()
        for name, value in compress(logp, self.top_k, self.g_idx).items():
            self.store[f"{prefix}_{name}"].append(value)


@torch.no_grad()
def build_cache(
    path: Path,
    teacher,
    train_blocks: torch.Tensor,
    twins,
    g_idx: torch.Tensor,
    temperature: float,
    top_k: int,
    batch_size: int,
    device,
    autocast,
    fmt: str = "hidden",
) -> dict:
    """Run the teacher over every block (and every changed block's twin, read from `twins`, a
    `distill.counterfactual.twins.TwinTable` of the blocks; None: no twins) and write the cache file at `path`."""
    from safetensors.torch import save_file

    N, T = train_blocks.shape
    st = _Store(teacher, fmt, temperature, top_k, g_idx, device, autocast)
    twin_of = torch.full((N,), -1, dtype=torch.long)
    n_twins = 0
    for start in range(0, N, batch_size):
        x = train_blocks[start : start + batch_size]
        st.add("x", x, torch.ones_like(x))
        if twins is not None:
            tw = twins.rows(list(range(start, start + x.shape[0])))
            changed = tw["changed"]
            if changed.any():
                st.add("t", tw["twin_ids"][changed], tw["twin_mask"][changed])
                rows = changed.nonzero(as_tuple=True)[0] + start
                twin_of[rows] = torch.arange(n_twins, n_twins + rows.numel())
                n_twins += rows.numel()
        log.info("teacher cache: %d / %d blocks", min(N, start + batch_size), N)
    tensors = {k: torch.cat(v) for k, v in st.store.items() if v}
    tensors.update(g_idx=g_idx.long(), twin_of=twin_of)
    if fmt == "hidden":
        k = 0
        per_token = tensors["x_hidden"].element_size() * int(tensors["x_hidden"].shape[-1])
    else:
        k = min(top_k, int(tensors["x_top_idx"].shape[-1]))
        per_token = bytes_per_token(k, g_idx.numel())
    meta = {
        "version": CACHE_VERSION,
        "format": fmt,
        "top_k": k,
        "blocks": N,
        "twins": n_twins,
        "vocab": st.vocab,
        "block_size": T,
        "temperature": temperature,
        "bytes_per_token": per_token,
        "dtype": str(st.dtype).split(".")[-1] if fmt == "hidden" else "float32",
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"fairdistill": json.dumps(meta)}))
    return meta


def open_or_build(cfg, teacher, tokenizer, train_blocks, device, accelerator, cf=None) -> TeacherCache:
    """The cache for this run: reused when its digest matches, built (by the main process) otherwise.

    The twins are always cached (from the recipe's word lists, through `cf`'s twin table; a plain-KD run, whose
    `cf` is None, builds that table here), so a plain-KD run and a counterfactual run over the same blocks share
    one file."""
    root = Path(cfg.teacher.cache).expanduser()
    builder = cf.builder if cf is not None else None
    key = cache_key(cfg, teacher, tokenizer, train_blocks, accelerator.mixed_precision, builder)
    path = root / f"{key}.safetensors"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not path.is_file():
            if cf is None or cf.table is None:
                from distill.counterfactual.twins import Counterfactuals

                cf = Counterfactuals(cfg, tokenizer)
                cf.precompute(cfg, train_blocks)
            g_idx = cf.builder.g_mask.nonzero(as_tuple=True)[0]
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK):
                raise FairDistillError(
                    f"teacher.cache {root} is not writable; point teacher.cache at another folder"
                )
            what = (
                "the teacher's final hidden states"
                + (
                    ""
                    if accelerator.mixed_precision == "no"
                    else f" under {accelerator.mixed_precision} autocast"
                )
                if cfg.teacher.cache_format == "hidden"
                else f"top {cfg.teacher.cache_top_k} + |G| {g_idx.numel()} log-probabilities"
            )
            log.info("teacher cache: building %s (%s per position)", path, what)
            meta = build_cache(
                path,
                teacher,
                train_blocks,
                cf.table,
                g_idx,
                cfg.kd.temperature,
                cfg.teacher.cache_top_k,
                cfg.train.micro_batch_size,
                device,
                accelerator.autocast,
                cfg.teacher.cache_format,
            )
            log.info(
                "teacher cache: %d blocks + %d twins, %d bytes per token, %.1f MB",
                meta["blocks"],
                meta["twins"],
                meta["bytes_per_token"],
                path.stat().st_size / 1e6,
            )
        else:
            log.info("teacher cache: reusing %s", path)
    return TeacherCache(path)

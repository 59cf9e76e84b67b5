"""Closed-form erasure of the gender lean from the student's MLP writes, folded into its weights.

After training, the student's stereotype lives in what its layers write into the residual stream at positions
where the context does not decide the gender ("The technician told the customer that"). This module finds, for
each chosen layer l, the directions along which that layer's MLP output m_l varies with the student's gendered
logit gaps at such positions, and removes them from the layer's output projection, so `final/` stays a plain
Hugging Face model (a DAMA-style null-space edit of the MLP output matrices, Limisiewicz et al., ICLR 2024; the
projection is the covariance-nulling eraser of LEACE, Belrose et al. 2023, in its orthogonal form).

With z_t in R^K the student's logit gaps z_a - z_b at position t for the single-token gendered pairs (a female,
b male; she/he, her/his, woman/man, ... with and without a capital), and N the gender-neutral positions of the
transfer set (no gendered word of the word lists, names included, since the start of the document):

    C_l = E_N[(m_l - E_N m_l)(z - E_N z)^T]        (d x K, the cross-covariance)
    U_l = the top `rank` left singular vectors of C_l
    with keep_context: d_l = E_F[m_l] - E_M[m_l], the mean difference of m_l between positions whose latest
    gendered word is female (F) and male (M): the direction that carries the context's gender; U_l is made
    orthogonal to it (U_l <- orth((I - d^ d^T) U_l)), so that what the context decides is not erased with it
    P_l = I - U_l U_l^T,  W_out <- P_l W_out (and its bias b <- P_l b)

After the edit Cov_N(P_l m_l, z) = P_l C_l has no component along U_l: no linear read-out of this layer's write
at neutral positions predicts the fitted part of the gaps. The projection is linear (no bias is added), so it
also removes the mean of m_l along U_l; the global lean is reported beside the rest. Supported: the Llama family
(`mlp.down_proj`) and GPT-2 (`mlp.c_proj`, a Conv1D); anything else is refused by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

_LETTERS = re.compile(r"[A-Za-z]+")
SINK = 2
"""The cue code of a sequence's first position: no context, and in many models an attention sink whose MLP
writes are orders of magnitude larger than elsewhere; left out of the fit and protected from the edit."""


@dataclass
class EraseStats:
    """Sums over the transfer set for one layer (float64)."""

    n: int = 0
    sum_m: torch.Tensor | None = None
    sum_z: torch.Tensor | None = None
    sum_mz: torch.Tensor | None = None
    n_f: int = 0
    n_m: int = 0
    sum_f: torch.Tensor | None = None
    sum_mm: torch.Tensor | None = None
    sum_outer: torch.Tensor | None = None
    n_sink: int = 0
    sum_sink: torch.Tensor | None = None

    def add(self, m: torch.Tensor, z: torch.Tensor, cue: torch.Tensor) -> None:
        """m [P, d], z [P, K] at P positions; cue [P]: 0 neutral, 1 female, -1 male, SINK a sequence's first
        position."""
        m, z = m.double(), z.double()
        neutral, fem, mal, sink = cue == 0, cue == 1, cue == -1, cue == SINK
        mn, zn = m[neutral], z[neutral]
        if self.sum_m is None:
            d, k = m.shape[1], z.shape[1]
            self.sum_m, self.sum_f, self.sum_mm = (torch.zeros(d, dtype=torch.float64) for _ in range(3))
            self.sum_z, self.sum_mz = (
                torch.zeros(k, dtype=torch.float64),
                torch.zeros(d, k, dtype=torch.float64),
            )
            self.sum_outer = torch.zeros(d, d, dtype=torch.float64)
            self.sum_sink = torch.zeros(d, dtype=torch.float64)
        self.n += int(neutral.sum())
        self.sum_m += mn.sum(0)
        self.sum_z += zn.sum(0)
        self.sum_mz += mn.T @ zn
        self.sum_outer += mn.T @ mn
        self.n_f += int(fem.sum())
        self.n_m += int(mal.sum())
        self.sum_f += m[fem].sum(0)
        self.sum_mm += m[mal].sum(0)
        self.n_sink += int(sink.sum())
        self.sum_sink += m[sink].sum(0)

    def mean(self) -> torch.Tensor:
        return self.sum_m / self.n

    def cross_cov(self) -> torch.Tensor:
        mu_m, mu_z = self.sum_m / self.n, self.sum_z / self.n
        return self.sum_mz / self.n - torch.outer(mu_m, mu_z)

    def cov(self) -> torch.Tensor:
        mu = self.mean()
        return self.sum_outer / self.n - torch.outer(mu, mu)

    def sink_direction(self) -> torch.Tensor | None:
        return None if self.n_sink == 0 else self.sum_sink / self.n_sink - self.mean()

    def context_direction(self) -> torch.Tensor | None:
        if self.n_f == 0 or self.n_m == 0:
            return None
        return self.sum_f / self.n_f - self.sum_mm / self.n_m


@dataclass
class Erasure:
    """The fitted erasers: layer index -> (A [d, d], A mu [d]), and what the fit saw."""

    edits: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def gendered_pair_ids(tokenizer, pairs) -> torch.Tensor:
    """[K, 2] (female id, male id) for the (male, female) word pairs whose both forms, after a space, are one token
    each; lowercase and capitalised forms. Refuses a tokenizer that gives none."""
    out, seen = [], set()
    for male, female in pairs:
        for form in (str.lower, str.capitalize):
            ids = [tokenizer(" " + form(w), add_special_tokens=False)["input_ids"] for w in (female, male)]
            if all(len(i) == 1 for i in ids):
                key = (ids[0][0], ids[1][0])
                if key not in seen and key[0] != key[1]:
                    seen.add(key)
                    out.append(key)
    if not out:
        raise ValueError("no gendered word pair is a single token each in this tokenizer: nothing to fit on")
    return torch.tensor(out, dtype=torch.long)


def cue_states(tokenizer, blocks: torch.Tensor, female: frozenset, male: frozenset, eos_id: int | None):
    """[N, T] int8: at each position, 1 if the latest gendered word since the start of its document (up to and
    including this position's token) is female, -1 if male, 0 if there is none (a gender-neutral position).
    Words are letter runs of the decoded text, whichever tokens they span (a word counts from its last token on);
    an eos token starts a new document."""
    pieces: dict[int, str] = {}
    out = torch.zeros(blocks.shape, dtype=torch.int8)
    for b, row in enumerate(blocks.tolist()):
        owner: list[int] = []
        texts = []
        events: dict[int, int] = {}
        for t, tid in enumerate(row):
            if eos_id is not None and tid == eos_id:
                text = "\n"
                events[t] = 0
            else:
                text = pieces.get(tid)
                if text is None:
                    text = pieces[tid] = tokenizer.decode([tid])
            texts.append(text)
            owner.extend([t] * len(text))
        for m in _LETTERS.finditer("".join(texts)):
            w = m.group().lower()
            if w in female or w in male:
                t = owner[m.end() - 1]
                if events.get(t) != 0:  # a word inside an eos token's text cannot happen; eos wins
                    events[t] = 1 if w in female else -1
        state = 0
        for t in range(len(row)):
            state = events.get(t, state)
            out[b, t] = state
    return out


def _mlp_modules(model: nn.Module) -> list[nn.Module]:
    base = getattr(model, "model", None)
    if base is not None and hasattr(base, "layers"):
        return [layer.mlp for layer in base.layers]
    base = getattr(model, "transformer", None)
    if base is not None and hasattr(base, "h"):
        return [block.mlp for block in base.h]
    raise ValueError(
        f"student.erase supports the Llama family (model.layers[i].mlp.down_proj) and GPT-2 "
        f"(transformer.h[i].mlp.c_proj), not {type(model).__name__}; set student.erase.rank: 0"
    )


def _out_projection(mlp: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(weight, bias, conv1d): the matrix that writes the MLP's output into the residual stream."""
    if hasattr(mlp, "down_proj"):
        p = mlp.down_proj
        return p.weight, p.bias, False
    if hasattr(mlp, "c_proj"):
        p = mlp.c_proj
        return p.weight, p.bias, type(p).__name__ == "Conv1D"
    raise ValueError(f"no output projection (down_proj or c_proj) in {type(mlp).__name__}")


def resolve_layers(spec: list[int] | None, n_layers: int) -> list[int]:
    """The layers to edit: `spec` (negative counts from the top), or the upper half."""
    if spec is None:
        return list(range(n_layers // 2, n_layers))
    out = sorted({i + n_layers if i < 0 else i for i in spec})
    bad = [i for i in out if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"student.erase.layers {spec} names layers outside 0..{n_layers - 1}")
    return out


@torch.no_grad()
def fit(
    model: nn.Module,
    tokenizer,
    blocks: torch.Tensor,
    female: frozenset,
    male: frozenset,
    pairs,
    layers: list[int] | None,
    rank: int,
    keep_context: bool = True,
    batch_size: int = 8,
    autocast=None,
) -> Erasure:
    """Fit the projections on `blocks` [N, T] (module docstring). `autocast`: a context-manager factory for the
    forward passes (the run's precision); the statistics are accumulated in float64."""
    if rank < 1:
        raise ValueError(f"student.erase.rank must be >= 1 to fit, got {rank}")
    mlps = _mlp_modules(model)
    chosen = resolve_layers(layers, len(mlps))
    pair_ids = gendered_pair_ids(tokenizer, pairs)
    cue = cue_states(tokenizer, blocks, female, male, tokenizer.eos_token_id)
    stats = {i: EraseStats() for i in chosen}
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        mlps[i].register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, out.detach()))
        for i in chosen
    ]
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ctx = autocast or contextlib.nullcontext
    try:
        for s in range(0, blocks.shape[0], batch_size):
            ids = blocks[s : s + batch_size].to(dev)
            with ctx():
                logits = model(input_ids=ids).logits
            lf = logits.float()
            z = (lf[..., pair_ids[:, 0]] - lf[..., pair_ids[:, 1]]).reshape(-1, pair_ids.shape[0]).cpu()
            c = cue[s : s + batch_size].clone()
            c[:, 0] = SINK
            c = c.reshape(-1)
            for i in chosen:
                m = captured[i].float().reshape(-1, captured[i].shape[-1]).cpu()
                stats[i].add(m, z, c)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    er = Erasure(
        report={"rank": rank, "layers": chosen, "keep_context": keep_context, "pairs": len(pair_ids)}
    )
    first = stats[chosen[0]]
    er.report.update(neutral_positions=first.n, female_positions=first.n_f, male_positions=first.n_m)
    if first.n < 2 * rank + 2:
        raise ValueError(
            f"only {first.n} gender-neutral positions in the transfer set: too few to fit rank {rank}; "
            "use more data (data.max_documents) or a lower student.erase.rank"
        )
    removed = {}
    for i in chosen:
        A, removed[i] = leace(stats[i], rank, keep_context)
        er.edits[i] = (A.float(), (A @ stats[i].mean()).float())
    er.report["cross_cov_removed"] = removed
    return er


def leace(st: EraseStats, rank: int, keep_context: bool, shrink: float = 0.0) -> tuple[torch.Tensor, float]:
    """The eraser's matrix A (d x d, rank <= `rank`) for one layer's statistics, and the share of the
    cross-covariance's squared norm it removes (module docstring)."""
    sigma = st.cov()
    if shrink > 0:
        d = sigma.shape[0]
        sigma = (1 - shrink) * sigma + shrink * torch.trace(sigma) / d * torch.eye(d, dtype=sigma.dtype)
    evals, evecs = torch.linalg.eigh(sigma)
    floor = evals.max().clamp_min(1e-30) * 1e-6
    keep = evals > floor
    V, ev = evecs[:, keep], evals[keep]
    W = V @ torch.diag(ev.rsqrt()) @ V.T  # Sigma^(-1/2) on its column space
    W_pinv = V @ torch.diag(ev.sqrt()) @ V.T
    C = st.cross_cov()
    U, _, _ = torch.linalg.svd(W @ C, full_matrices=False)
    U = U[:, :rank]
    protect = [st.sink_direction()] + ([st.context_direction()] if keep_context else [])
    kept = [W @ d for d in protect if d is not None and float(d.norm()) > 0]
    if kept:  # U leaves the span of the protected directions (whitened) entirely: A maps each of them to 0
        P, _ = torch.linalg.qr(torch.stack(kept, dim=1))
        U, _ = torch.linalg.qr(U - P @ (P.T @ U))
    A = W_pinv @ U @ U.T @ W
    left = C - A @ C
    return A, float(1.0 - left.norm() ** 2 / C.norm().clamp_min(1e-30) ** 2)


@torch.no_grad()
def apply(model: nn.Module, er: Erasure) -> None:
    """Fold m <- m - A (m - mu) into each chosen layer's MLP output projection, in place, in the weights' dtype:
    W <- (I - A) W, b <- (I - A) b + A mu. A Llama-family model without MLP biases gets them (config.mlp_bias,
    zeros where nothing is added), so the result loads as a plain Hugging Face model."""
    mlps = _mlp_modules(model)
    for i, (A, shift) in er.edits.items():
        w, b, conv1d = _out_projection(mlps[i])
        if b is None:
            b = _add_biases(model, mlps, i)
        A = A.to(device=w.device, dtype=torch.float32)
        W = w.float()
        W = W - W @ A.T if conv1d else W - A @ W  # Conv1D: out = x @ W + b, W [in, out]; Linear: W [out, in]
        w.copy_(W.to(w.dtype))
        bf = b.float()
        b.copy_((bf - A @ bf + shift.to(bf.device)).to(b.dtype))


def _add_biases(model: nn.Module, mlps: list[nn.Module], i: int) -> torch.Tensor:
    """Give every MLP of a Llama-family model zero biases (its config's `mlp_bias`); return layer i's output
    bias."""
    if not hasattr(model.config, "mlp_bias") or not all(hasattr(m, "down_proj") for m in mlps):
        raise ValueError(
            f"{type(model).__name__}: its MLP output projection has no bias to hold the eraser's mean; "
            "student.erase supports GPT-2 and the Llama family"
        )
    if not model.config.mlp_bias:
        model.config.mlp_bias = True
        for m in mlps:
            for lin in (m.gate_proj, m.up_proj, m.down_proj):
                if lin.bias is None:
                    lin.bias = nn.Parameter(
                        torch.zeros(lin.out_features, dtype=lin.weight.dtype, device=lin.weight.device)
                    )
    return mlps[i].down_proj.bias


def lexicon_for(cfg):
    """The gendered words that mark a position as decided: the recipe's lists, with first names (the recipe's
    `augment.names`, or names.tsv where the recipe swaps none)."""
    from distill.counterfactual.wordlists import load_lexicon

    a = cfg.augment
    return load_lexicon(a.pairs, a.one_to_many, a.names or "word_lists/names.tsv")


def erase_student(model: nn.Module, tokenizer, cfg, train_blocks, val_blocks=None, autocast=None) -> dict:
    """Fit `cfg.student.erase` on the transfer set and fold it into `model`, in place; returns the report
    (positions seen, share of each layer's cross-covariance removed, validation perplexity before and after)."""
    from distill.evaluation.scoring import perplexity

    e = cfg.student.erase
    lex = lexicon_for(cfg)
    female = lex.female_words() | {f for _, f in lex.names}
    male = lex.male_words() | {m for m, _ in lex.names}
    t0 = time.perf_counter()

    def ppl() -> float | None:
        if val_blocks is None:
            return None
        with (autocast or contextlib.nullcontext)():
            return perplexity(model, tokenizer, val_blocks, device=next(model.parameters()).device)["ppl"]

    before = ppl()
    er = fit(
        model,
        tokenizer,
        train_blocks,
        female,
        male,
        lex.pairs,
        e.layers,
        e.rank,
        e.keep_context,
        autocast=autocast,
    )
    apply(model, er)
    report = {
        **er.report,
        "val_ppl_before": before,
        "val_ppl_after": ppl(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info(
        "erasure: rank %d on layers %s from %d gender-neutral positions; cross-covariance removed %s; "
        "validation perplexity %s -> %s",
        e.rank,
        report["layers"],
        report["neutral_positions"],
        ", ".join(f"{v:.0%}" for v in report["cross_cov_removed"].values()),
        f"{before:.2f}" if before else "-",
        f"{report['val_ppl_after']:.2f}" if before else "-",
    )
    return report


def record(run_dir: Path, report: dict, step: int | None = None) -> None:
    """Write the erasure's report (`<run>/erase.json`) and append the validation perplexity after it to the run's
    metrics.jsonl, as the run's last `val/ppl` (what the five-seed tables read), with the one before it as
    `erase/val_ppl_before`; `step` defaults to the last step the log has."""
    from distill.core.files import atomic_write, read_jsonl, to_strict_json

    run_dir = Path(run_dir)
    atomic_write(run_dir / "erase.json", json.dumps(to_strict_json(report), indent=1) + "\n")
    if report.get("val_ppl_after") is None:
        return
    metrics = run_dir / "metrics.jsonl"
    if step is None:
        step = max((r.get("step", 0) for r in read_jsonl(metrics)), default=0) if metrics.is_file() else 0
    line = {
        "step": step,
        "val/ppl": report["val_ppl_after"],
        "erase/val_ppl_before": report["val_ppl_before"],
    }
    with open(metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def erase_run(run_dir, out_dir, overrides: list[str]) -> Path:
    """`distill erase RUN --out NEW [student.erase.rank=1 ...]`: a new run folder whose `final/` is RUN's student
    with `student.erase` applied, fitted on RUN's transfer set (rebuilt from the recipe and checked against RUN's
    validation blocks), with RUN's recipe plus the overrides as its config.yaml and identity; RUN is only read."""
    from safetensors.torch import load_file

    from distill.core.errors import ConfigError
    from distill.core.ownership import write_identity
    from distill.core.precision import resolve_mixed_precision
    from distill.core.recipe import load_config, save_config
    from distill.core.rundir import RunDir
    from distill.data.transfer import build_blocks
    from distill.models.loading import load_pretrained, load_teacher
    from distill.models.remote_code import library_tokenizer
    from distill.reporting.card import write_card

    src, out = RunDir(run_dir), Path(out_dir)
    if not (src.final / "config.json").is_file():
        raise ConfigError(f"{src.path}: no final/ model to erase; train the run first (or give a run folder)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: already exists and is not empty; give a new folder for the erased run")
    if not src.config.is_file():
        raise ConfigError(f"{src.path}: no config.yaml, so its transfer set cannot be rebuilt")
    cfg = load_config(src.config, list(overrides))
    if cfg.student.erase.rank < 1:
        raise ConfigError(
            f"student.erase.rank is {cfg.student.erase.rank}: nothing to erase; add e.g. student.erase.rank=1"
        )
    cfg.run.output_dir, cfg.run.name = str(out.parent), out.name
    dst = RunDir(out)
    cuda = torch.cuda.is_available()
    mp, _ = resolve_mixed_precision(cfg.train.mixed_precision, cuda=cuda)
    device = "cuda" if cuda else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp)

    def autocast():
        return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    teacher, tokenizer, _ = load_teacher(cfg)
    with autocast():
        train_blocks, val_blocks = build_blocks(
            cfg, tokenizer, teacher=teacher if cfg.data.source == "teacher_samples" else None, device=device
        )
    del teacher
    if src.val_blocks.is_file():
        saved = load_file(str(src.val_blocks))
        saved_val = next(iter(saved.values()))
        if not torch.equal(saved_val.to(val_blocks.dtype), val_blocks):
            raise ConfigError(
                f"{src.path}: the transfer set rebuilt from its config.yaml is not the one it trained on (its "
                "validation blocks differ); erase on the machine and cache that trained it"
            )
    model = load_pretrained(str(src.final), "student", torch.float32).to(device)
    report = erase_student(model, tokenizer, cfg, train_blocks, val_blocks, autocast=autocast)
    report["source_run"] = str(src.path)
    out.mkdir(parents=True, exist_ok=True)
    write_identity(dst, cfg)
    save_config(cfg, dst.config)
    for name in ("val_blocks.safetensors", "prune.json", "metrics.jsonl"):
        if (src.path / name).is_file():
            shutil.copy2(src.path / name, out / name)
    record(out, report)
    model = model.to("cpu")

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        library_tokenizer(tokenizer).save_pretrained(folder)
        write_card(folder, cfg, out, model=model, precision=mp)

    dst.write_final(write)
    log.info("erased student written to %s", dst.final)
    return out

"""Seeded, batch-size-independent sampling from a causal LM, and JSONL storage of the results.

Our own loop instead of `model.generate`: each sequence (prompt i, sample k) draws its random numbers from its
own generator, seeded from `(seed, prompt text, k)`, so a continuation is the same whatever the batch size, the
batch it lands in, or the other prompts in the run. Batches are left-padded, position ids come from the attention
mask (a padded row sees the positions it would see alone), and the KV cache makes each step one token long.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from distill.core.errors import ConfigError
from distill.models.lm import (
    cache_keyword,
    encode_prompt,
    eval_mode,
    last_logits_kwargs,
    left_pad,
    max_positions,
    model_device,
    pad_token_id,
)


def row_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of one sampled sequence: a hash of the run seed, the prompt text and the sample's index among
    samples of that same prompt text (so duplicated prompts still get different samples)."""
    digest = hashlib.sha256(f"{seed}\x1f{index}\x1f{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _eos_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    """Token ids that end a sequence: the tokenizer's eos and the model's generation config eos (an int or a
    list, as in Llama 3)."""
    ids: set[int] = set()
    candidates = [
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ]
    for c in candidates:
        if c is None:
            continue
        ids.update(int(x) for x in (c if isinstance(c, (list, tuple)) else [c]))
    return ids


def _choose_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, top_p: float, temperature: float
) -> torch.Tensor:
    """Pick one token per row from `logits` (B, V): argmax when `temperature == 0`, else nucleus (top-p) sampling
    at `temperature` by inverse CDF with the row's own uniform draw `uniforms` (B,). Returns (B,) token ids.

    The nucleus is the smallest prefix of tokens sorted by probability whose mass reaches `top_p` (the top token
    is always in it). A stable sort keeps ties in vocabulary order, so the choice does not depend on the batch.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, sorted_idx = torch.sort(probs, dim=-1, descending=True, stable=True)
    cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < top_p  # mass before this token is still short of top_p
    keep[:, 0] = True
    kept = sorted_p * keep
    kept_cum = kept.cumsum(-1)
    target = uniforms.to(kept_cum.device, kept_cum.dtype)[:, None] * kept_cum[:, -1:]
    choice = (kept_cum < target).sum(-1).clamp(max=logits.shape[-1] - 1)
    return sorted_idx.gather(-1, choice[:, None]).squeeze(-1)


@torch.inference_mode()
def _sample_batch(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    seeds: Sequence[int],
    max_new_tokens: int,
    top_p: float,
    temperature: float,
    pad_id: int,
    eos_ids: set[int],
    device: torch.device,
) -> list[list[int]]:
    """Continue each prompt (token lists, one row each) for up to `max_new_tokens` tokens; a row stops after it
    emits an eos token, which is not returned. Rows never interact, so each result depends only on its prompt and
    seed (up to float rounding of batched matmuls)."""
    ids, mask, pos = left_pad(prompt_ids, pad_id, device)  # (B, L) each
    n_rows = len(prompt_ids)
    # CPU generators: the random stream is the same on every device, and one draw per row per step is cheap.
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    done = [False] * n_rows
    outputs: list[list[int]] = [[] for _ in range(n_rows)]
    extra = last_logits_kwargs(model)
    cache_kw = cache_keyword(model)
    past, step_ids, step_pos = None, ids, pos
    for _ in range(max_new_tokens):
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=step_pos,
            use_cache=True,
            **{cache_kw: past},
            **extra,
        )
        past = getattr(out, cache_kw)
        logits = out.logits[:, -1, :]  # (B, V)
        if temperature == 0:
            uniforms = torch.zeros(n_rows)
        else:
            # Finished rows draw nothing, so a row's stream is consumed exactly once per token it generates.
            uniforms = torch.tensor(
                [0.0 if done[r] else float(torch.rand((), generator=generators[r])) for r in range(n_rows)]
            )
        next_ids = _choose_tokens(logits, uniforms, top_p, temperature)  # (B,)
        next_list = next_ids.tolist()
        for r, tok in enumerate(next_list):
            if done[r]:
                next_list[r] = pad_id  # fed back but never read: keeps the batch rectangular
            elif tok in eos_ids:
                done[r] = True
            else:
                outputs[r].append(tok)
        if all(done):
            break
        step_ids = torch.tensor(next_list, dtype=torch.long, device=device)[:, None]  # (B, 1)
        mask = torch.cat([mask, mask.new_ones((n_rows, 1))], dim=1)  # (B, L + t)
        step_pos = step_pos[:, -1:] + 1  # (B, 1)
    return outputs


def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    n_per_prompt: int = 1,
    max_new_tokens: int = 32,
    top_p: float = 0.95,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[list[str]]:
    """Sample `n_per_prompt` continuations of each prompt; returns `out[i][k]`, the k-th continuation of prompt i
    (continuation text only, eos and special tokens removed).

    Sampling is nucleus (top-p) at `temperature`; `temperature=0` is greedy. Each sequence is seeded from
    `(seed, prompt text, k)` (see `row_seed`), so results do not depend on `batch_size` or prompt order. Prompts
    are encoded with the tokenizer's special tokens; an empty prompt starts from bos. A prompt too long for the
    model keeps its last `limit - max_new_tokens` tokens. The model must already be on `device` (default: the
    model's device); it is put in eval mode for the call and restored after.
    """
    if n_per_prompt < 1:
        raise ConfigError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    limit = max_positions(model)
    if limit is not None and max_new_tokens >= limit:
        raise ConfigError(
            f"max_new_tokens ({max_new_tokens}) must be below the model's position limit ({limit})"
        )
    dev = model_device(model, device)
    pad_id = pad_token_id(tokenizer)
    eos_ids = _eos_ids(model, tokenizer)

    encoded: list[list[int]] = []
    for p in prompts:
        ids = encode_prompt(tokenizer, p)
        if limit is not None and len(ids) + max_new_tokens > limit:
            ids = ids[len(ids) + max_new_tokens - limit :]
        encoded.append(ids)
    # One row per (prompt, sample); k counts samples of the same prompt text across the whole list.
    rows: list[tuple[int, int, int]] = []  # (prompt index, sample index in out[i], seed)
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        for k in range(n_per_prompt):
            j = seen.get(p, 0)
            seen[p] = j + 1
            rows.append((i, k, row_seed(seed, p, j)))

    results: list[list[str]] = [[""] * n_per_prompt for _ in prompts]
    if max_new_tokens == 0 or not rows:
        return results
    # Similar prompt lengths share a batch (less padding); the order cannot change any result.
    order = sorted(range(len(rows)), key=lambda r: len(encoded[rows[r][0]]))
    with eval_mode(model), tqdm(total=len(rows), desc="generate", unit="seq", disable=not progress) as bar:
        for b in range(0, len(order), batch_size):
            batch = [rows[r] for r in order[b : b + batch_size]]
            tokens = _sample_batch(
                model,
                [encoded[i] for i, _, _ in batch],
                [s for _, _, s in batch],
                max_new_tokens,
                top_p,
                temperature,
                pad_id,
                eos_ids,
                dev,
            )
            for (i, k, _), toks in zip(batch, tokens):
                results[i][k] = tokenizer.decode(toks, skip_special_tokens=True)
            bar.update(len(batch))
    return results

"""Perplexity on held-out text, fluency of generations under a reference model, and sentence log-likelihoods.

All three reduce to one operation: the log-probability of some *target* tokens given the tokens before them,
computed in batches with right padding (positions start at 0 in every row, so no position ids are needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from distill.models.lm import (
    bos_token_id,
    encode_plain,
    encode_prompt,
    eval_mode,
    max_positions,
    model_device,
    pad_token_id,
    right_pad,
)

DEFAULT_BLOCK_SIZE = 1024
REDUCTIONS = ("sum", "mean")


@torch.inference_mode()
def score_targets(
    model: torch.nn.Module,
    items: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = 8,
    device: str | torch.device | None = None,
    pad_id: int = 0,
) -> tuple[list[float], list[int]]:
    """Sum of log P(target tokens | everything before them) for each `(context_ids, target_ids)` item.

    Returns `(logliks, counts)`: per item the summed natural-log probability of its scored target tokens and how
    many were scored. Every target token is scored when the context is non-empty; with an empty context the first
    target token has nothing to condition on and is skipped. Sequences longer than the model's position limit
    lose tokens from the left (context first), and target tokens left without context are skipped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = model_device(model, device)
    limit = max_positions(model)
    seqs: list[list[int]] = []
    starts: list[int] = []  # first position j whose token is scored (predicted from position j - 1)
    for ctx, tgt in items:
        seq = list(ctx) + list(tgt)
        n_ctx = len(ctx)
        if limit is not None and len(seq) > limit:
            drop = len(seq) - limit
            seq, n_ctx = seq[drop:], max(0, n_ctx - drop)
        seqs.append(seq)
        starts.append(max(n_ctx, 1))
    logliks = [0.0] * len(seqs)
    counts = [max(0, len(s) - st) for s, st in zip(seqs, starts)]
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up on the first batch.
    order = sorted((i for i in range(len(seqs)) if counts[i] > 0), key=lambda i: -len(seqs[i]))
    with eval_mode(model):
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            ids, mask = right_pad([seqs[i] for i in rows], pad_id, dev)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
            # token_logp[r, j-1] = log P(ids[r, j] | ids[r, :j]); float32 so bf16 models sum accurately.
            token_logp = -F.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none"
            )  # (B, L-1)
            # (1, L-1): the position of each predicted token
            j = torch.arange(1, ids.shape[1], device=dev)[None, :]
            lengths = mask.sum(-1, keepdim=True)  # (B, 1)
            start = torch.tensor([starts[i] for i in rows], device=dev)[:, None]  # (B, 1)
            scored = (j >= start) & (j < lengths)
            sums = (token_logp * scored).sum(-1)
            for r, i in enumerate(rows):
                logliks[i] = float(sums[r])
    return logliks, counts


def _text_stream(tokenizer, texts: Sequence[str]) -> list[int]:
    """Concatenate non-blank texts into one token stream with the eos token between documents (as GPT-2 saw
    documents in training); blank texts (WikiText's empty lines) are skipped."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        if not text.strip():
            continue
        if stream and eos is not None:
            stream.append(int(eos))
        stream.extend(encode_plain(tokenizer, text))
    return stream


def perplexity(
    model: torch.nn.Module,
    tokenizer,
    data: Sequence[str] | str | torch.Tensor,
    block_size: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict:
    """Token-weighted perplexity over non-overlapping blocks.

    `data` is a list of texts, joined into one stream with eos between documents; a 1-D token tensor (a stream);
    or a 2-D tensor (n_blocks, block_len) of ready-made blocks. The stream is cut into consecutive blocks of
    `block_size` tokens (default: the model's position limit, at most 1024); the last block may be shorter.

    What is counted: every token of every block except the block's first, which has no context; eos separators
    between documents are predicted and counted like any token. Tokens near a block start see little context,
    so this is higher than a sliding-window perplexity; compare models only at the same `block_size`.

    Returns `{"nll": mean negative log-likelihood per counted token (nats), "ppl": exp(nll), "tokens": number of
    counted tokens, "blocks": number of blocks}`; nll and ppl are nan when no token is counted.
    """
    limit = max_positions(model)
    if block_size is None:
        block_size = min(limit or DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_SIZE)
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (one context token and one predicted), got {block_size}")
    if limit is not None and block_size > limit:
        raise ValueError(
            f"block_size {block_size} exceeds the model's position limit {limit}; use block_size<={limit}"
        )
    if isinstance(data, torch.Tensor):
        if data.ndim == 2:
            blocks = [row.tolist() for row in data]
        elif data.ndim == 1:
            stream = data.tolist()
            blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
        else:
            raise ValueError(
                f"token tensor must be 1-D (a stream) or 2-D (blocks), got shape {tuple(data.shape)}"
            )
    else:
        texts = [data] if isinstance(data, str) else list(data)
        stream = _text_stream(tokenizer, texts)
        blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    items = [(block[:1], block[1:]) for block in blocks if block]
    logliks, counts = score_targets(model, items, batch_size, device, pad_token_id(tokenizer))
    tokens = sum(counts)
    nll = -sum(logliks) / tokens if tokens else math.nan
    return {"nll": nll, "ppl": math.exp(nll) if tokens else math.nan, "tokens": tokens, "blocks": len(items)}


def fluency(
    reference_model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str] | Sequence[Sequence[str]],
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> dict:
    """Perplexity of generated continuations under a reference model (e.g. the teacher), each conditioned on its
    prompt; only continuation tokens are scored.

    `continuations` is parallel to `prompts`: one string per prompt, or a list of strings per prompt (the shape
    `generate` returns). Prompts are encoded as for generation (the tokenizer's special tokens included),
    continuations without special tokens. Returns `{"nll", "ppl", "tokens", "n_texts", "n_empty"}`: token-weighted
    over all continuations; empty continuations add no tokens and are counted in `n_empty`.
    """
    if len(prompts) != len(continuations):
        raise ValueError(
            f"{len(prompts)} prompts but {len(continuations)} continuation entries; they must be parallel"
        )
    items: list[tuple[list[int], list[int]]] = []
    n_empty = 0
    for prompt, conts in zip(prompts, continuations):
        ctx = encode_prompt(tokenizer, prompt)
        for cont in [conts] if isinstance(conts, str) else conts:
            tgt = encode_plain(tokenizer, cont)
            n_empty += not tgt
            items.append((ctx, tgt))
    logliks, counts = score_targets(reference_model, items, batch_size, device, pad_token_id(tokenizer))
    tokens = sum(counts)
    nll = -sum(logliks) / tokens if tokens else math.nan
    return {
        "nll": nll,
        "ppl": math.exp(nll) if tokens else math.nan,
        "tokens": tokens,
        "n_texts": len(items),
        "n_empty": n_empty,
    }


def sentence_loglik(
    model: torch.nn.Module,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 16,
    device: str | torch.device | None = None,
    reduction: str = "sum",
) -> list[float]:
    """Log-likelihood of each whole sentence under a causal LM, conditioned on the start-of-text token.

    The sentence is encoded without special tokens and every one of its tokens is scored given bos (GPT-2's
    `<|endoftext|>`; eos if there is no bos; with neither, the first token is not scored). `reduction="sum"`
    gives log P(sentence); `"mean"` divides by the number of scored tokens (length-normalised; nan for an empty
    sentence).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    bos = bos_token_id(tokenizer)
    ctx = [] if bos is None else [bos]
    items = [(ctx, encode_plain(tokenizer, s)) for s in sentences]
    logliks, counts = score_targets(model, items, batch_size, device, pad_token_id(tokenizer))
    if reduction == "sum":
        return logliks
    return [ll / n if n else math.nan for ll, n in zip(logliks, counts)]


class LoglikScorer:
    """`sentence_loglik` as a callable `text -> float` with a cache, for the downstream scorers.

    `scorer(text)` scores one sentence; `scorer.many(texts)` scores a list in batches (the downstream scorers use
    it when present). Results are cached per text, so the same sentence is never scored twice.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        reduction: str = "sum",
    ):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.device, self.reduction = batch_size, device, reduction
        self._cache: dict[str, float] = {}

    def many(self, texts: Sequence[str]) -> list[float]:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            scores = sentence_loglik(
                self.model, self.tokenizer, todo, self.batch_size, self.device, reduction=self.reduction
            )
            self._cache.update(zip(todo, scores))
        return [self._cache[t] for t in texts]

    def __call__(self, text: str) -> float:
        return self.many([text])[0]


def loglik_all(loglik, sentences: Sequence[str]) -> list[float]:
    """Score `sentences` with `loglik`: in one batched call when it has a `many` method (see `LoglikScorer`),
    else one call per sentence (plain functions, fakes in tests)."""
    many = getattr(loglik, "many", None)
    if callable(many):
        return [float(x) for x in many(list(sentences))]
    return [float(loglik(s)) for s in sentences]

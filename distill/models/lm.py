"""Small helpers shared by the modules that run a causal LM: device, eval mode, encoding and padding."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch


def model_device(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else the device of the model's first parameter (CPU for a parameterless model)."""
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Switch off dropout for the block and restore the caller's mode after, so a probe run mid-training is
    deterministic and does not leave the student in eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def pad_token_id(tokenizer) -> int:
    """The id used to fill padded positions (never attended to, never scored): pad, else eos, else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def bos_token_id(tokenizer) -> int | None:
    """A start-of-text id to condition the first real token on: bos, else eos (GPT-2 uses `<|endoftext|>` for
    both), else None."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Encode a prompt the way the model family expects (special tokens included, e.g. Llama's BOS). An empty
    prompt becomes `[bos]` so there is always a position to predict from."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if not ids:
        bos = bos_token_id(tokenizer)
        if bos is None:
            raise ValueError(
                "empty prompt and the tokenizer has neither a bos nor an eos token to start from"
            )
        ids = [bos]
    return ids


def encode_plain(tokenizer, text: str) -> list[int]:
    """Encode text with no special tokens (for continuations and scored sentences)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def max_positions(model: torch.nn.Module) -> int | None:
    """The longest sequence the model's position embeddings allow, if its config says."""
    cfg = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists into a batch so every row's last real token sits in the last column.

    Returns `input_ids` (B, L), `attention_mask` (B, L) with 0 on padding, and `position_ids` (B, L) counted from
    each row's first real token (padding gets 0), so a padded row sees exactly the positions it would see alone.
    """
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, length - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[r, length - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def right_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: `input_ids` (B, L) and `attention_mask` (B, L). Positions then start at 0 in every
    row, so no position ids are needed."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def last_logits_kwargs(model: torch.nn.Module) -> dict:
    """`{"logits_to_keep": 1}` where the model's forward takes it: only the last position's logits are needed,
    which saves a (B, L, V) tensor (49k-token vocabularies make that the largest allocation)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def last_token_logprobs(
    model: torch.nn.Module,
    encoded: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> Iterator[torch.Tensor]:
    """log-softmax in float32 of the next-token logits after each prompt: one (B, V) tensor per batch of
    `batch_size` left-padded prompts, in order. No gradients; the model's train/eval mode is restored after."""
    extra = last_logits_kwargs(model)
    with torch.inference_mode(), eval_mode(model):
        for b in range(0, len(encoded), batch_size):
            ids, mask, pos = left_pad(encoded[b : b + batch_size], pad_id, device)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **extra).logits[:, -1]
            yield torch.log_softmax(logits.float(), dim=-1)


def cache_keyword(model: torch.nn.Module) -> str:
    """The name the model's forward gives its KV cache argument (and its output field): `cache` in transformers 5,
    whose `past_key_values` is a deprecated alias that warns, and `past_key_values` before it."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"

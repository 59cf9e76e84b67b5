"""Importance-ranked layer selection (`student.prune`): block influence (ShortGPT) of each decoder layer on the
transfer blocks, the layers to drop, cached by content."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from torch import nn

from distill.core.config import StudentConfig
from distill.core.errors import ModelError
from distill.core.files import atomic_write, digest, model_fingerprint, tensor_digest
from distill.models.loading import num_layers

log = logging.getLogger(__name__)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The numbered container of the model's transformer blocks (`model.layers`, `transformer.h`, ...)."""
    n = num_layers(model.config)
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) == n
            and re.search(r"(^|\.)(h|layers|layer|blocks)$", name)
        ):
            return module
    raise ModelError(
        f"{type(model).__name__}: no container of its {n} transformer blocks found (unsupported architecture?)"
    )


@torch.no_grad()
def block_influence(model: nn.Module, blocks: torch.Tensor, batch_size: int = 4) -> list[float]:
    """Block influence of each layer (ShortGPT, Men et al. 2024): `BI_l = 1 - mean_t cos(h_l[t], h_{l+1}[t])`,
    with `h_l` the hidden state entering layer l and `h_{l+1}` the one leaving it, averaged over every token of
    `blocks` (N, T). A layer that barely changes its input scores near 0. Read with forward hooks, so the final
    norm (which some models apply to their last hidden state) does not enter the last layer's score."""
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0

    def hook(index):
        def fn(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # (B, T)
            sums[index] += cos.double().sum().cpu()

        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for b in range(0, blocks.shape[0], batch_size):
            x = blocks[b : b + batch_size].to(device)
            model(input_ids=x)
            count += x.numel()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return (1.0 - sums / max(count, 1)).tolist()


def prune_selection(scores: list[float], drop: int) -> tuple[list[int], list[int]]:
    """(kept layers in order, dropped layers): the `drop` layers with the lowest score go; ties drop the later
    layer first."""
    n = len(scores)
    if not 0 <= drop < n:
        raise ModelError(
            f"student.prune.drop must leave at least one of the teacher's {n} layers, got {drop}; use 0..{n - 1}"
        )
    order = sorted(range(n), key=lambda i: (scores[i], -i))
    dropped = sorted(order[:drop])
    return [i for i in range(n) if i not in dropped], dropped


def check_prune(cfg: StudentConfig, teacher: nn.Module) -> None:
    """Refuse a `student.prune.drop` the teacher's depth cannot give, before any data is built."""
    n = num_layers(teacher.config)
    if cfg.prune.drop >= n:
        raise ModelError(
            f"student.prune.drop ({cfg.prune.drop}) must leave at least one of the teacher's {n} layers; use 1..{n - 1}"
        )


def prune_layers(cfg: StudentConfig, teacher: nn.Module, blocks: torch.Tensor, cache_dir: str | Path) -> dict:
    """Rank the teacher's layers by `cfg.prune.by` on the first `cfg.prune.blocks` of `blocks` and choose the
    student's layers. Returns {"layers", "dropped", "scores", "by", "blocks", "cached", "key"}; the scores are
    cached in `<cache_dir>/prune/<key>.json` (key: the teacher's weights, the blocks, the method)."""
    check_prune(cfg, teacher)
    used = blocks[: cfg.prune.blocks].contiguous()
    key = digest([cfg.prune.by, model_fingerprint(teacher), list(used.shape), tensor_digest(used.cpu())])
    path = Path(cache_dir) / "prune" / f"{key}.json"
    cached = path.is_file()
    if cached:
        scores = json.loads(path.read_text())["scores"]
    else:
        scores = block_influence(teacher, used, cfg.prune.batch_size)
        # atomic: a concurrent run reads the whole file or none
        atomic_write(
            path, json.dumps({"by": cfg.prune.by, "blocks": list(used.shape), "scores": scores}, indent=1)
        )
    kept, dropped = prune_selection(scores, cfg.prune.drop)
    return {
        "by": cfg.prune.by,
        "layers": kept,
        "dropped": dropped,
        "scores": scores,
        "blocks": list(used.shape),
        "cached": cached,
        "key": key,
    }

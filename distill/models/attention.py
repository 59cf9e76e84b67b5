"""The student's attention kernel while it trains (`train.attention`): checked before the teacher samples, switched
in place."""

from __future__ import annotations

import logging

from torch import nn

from distill.core.errors import ModelError

log = logging.getLogger(__name__)


def check_attention(model: nn.Module, implementation: str) -> None:
    """A ModelError when `model` cannot train with the attention kernel `train.attention` asks for (`auto`: the one
    it loaded with, always fine)."""
    if implementation == "auto":
        return
    current = model.config._attn_implementation
    if implementation == current:
        return
    name = type(model).__name__
    if implementation == "sdpa" and not model._supports_sdpa:
        raise ModelError(
            f"train.attention='sdpa': {name} has no sdpa attention in transformers; set train.attention=auto "
            f"(keeps {current!r})"
        )
    if not model._can_set_attn_implementation():
        raise ModelError(
            f"train.attention={implementation!r}: {name} cannot switch its attention kernel (it loaded with "
            f"{current!r}); set train.attention=auto"
        )


def set_attention(model: nn.Module, implementation: str) -> str:
    """Switch `model` to the attention kernel `train.attention` asks for; returns the kernel it trains with."""
    check_attention(model, implementation)
    if implementation == "auto":
        return model.config._attn_implementation
    name = type(model).__name__
    if model.config._attn_implementation != implementation:
        try:
            model.set_attn_implementation(implementation)
        except (ValueError, ImportError) as e:  # should transformers still refuse the switch
            raise ModelError(
                f"train.attention={implementation!r}: {name}: {e}; set train.attention=auto"
            ) from e
    if model.config._attn_implementation != implementation:  # refused with a warning only
        raise ModelError(
            f"train.attention={implementation!r}: {name} stays {model.config._attn_implementation!r}; "
            "set train.attention=auto"
        )
    return implementation

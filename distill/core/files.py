"""Files written whole or not at all, and the digests that name content-addressed cache entries.

    atomic_write(path, "text") / atomic_write(path, b"bytes") / atomic_write(path, lambda tmp: save(tmp))
    atomic_write(folder, lambda tmp: model.save_pretrained(tmp), folder=True)

Everything goes to a temporary sibling (its name ends in `.tmp<pid>`, so concurrent writers never share one) and is
renamed over the target: a reader, or a run that was killed halfway, sees the old content or the new, never a part.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def atomic_write(
    path: str | Path, content: str | bytes | Callable[[Path], object], folder: bool = False
) -> Path:
    """Write `content` (text, bytes, or a function that writes the temporary path it is given) to `path`
    atomically; with `folder`, the function fills a temporary folder that then replaces the folder `path`.
    On any error the temporary copy is removed and `path` is left as it was. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        if folder:
            tmp.mkdir()
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
        if folder:
            _remove(path)  # a folder cannot be renamed over a non-empty one
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def atomic_save_tensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file written through `atomic_write`."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)

    return atomic_write(path, write)


def not_a_file(path: str | Path) -> str | None:
    """Why `path` cannot be read as a regular file, in words that follow its name ("is a folder", "is a named pipe
    (FIFO)", "is a symbolic link that loops", "does not exist"), or None when it is one."""
    import errno
    import stat

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link that loops (following it leads back to itself)"
        if p.is_symlink():
            return f"is a symbolic link to {os.readlink(p)!r}, which does not exist"
        return "does not exist" if e.errno == errno.ENOENT else f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return (
        "is "
        + next((name for test, name in kinds.items() if test(mode)), "not a regular file")
        + ", not a file"
    )


# --------------------------------------------------------------------------------------------------------------
# Fingerprints


def digest(obj) -> str:
    """16 hex digits of SHA-256 over `obj` as sorted JSON (anything JSON cannot encode goes in as str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_digest(t) -> str:
    """SHA-256 (hex) of a CPU tensor's bytes."""
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Digest of a tokenizer's vocabulary size, an even sample of its vocabulary and its end-of-text id."""
    vocab = tokenizer.get_vocab()
    return digest([len(vocab), sorted(vocab.items())[:: max(1, len(vocab) // 512)], tokenizer.eos_token_id])


def model_fingerprint(model) -> str:
    """Digest of a model's config and of every weight (name, shape, dtype and two float64 sums): the same name
    with other weights (retrained, re-converted, one layer changed) gets another fingerprint."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, t in model.state_dict().items():
        t = t.detach().double()
        h.update(f"{name}{tuple(t.shape)}{float(t.sum()):.10e}{float(t.abs().sum()):.10e}".encode())
    h.update(str(next(iter(model.parameters())).dtype).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------
# JSON and JSON Lines


def to_strict_json(obj: Any) -> Any:
    """Plain JSON data: NaN and infinities -> None (JSON has no NaN), numpy scalars and arrays -> Python,
    tuples -> lists, paths -> strings."""
    if isinstance(obj, dict):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write one JSON object per line (UTF-8, non-ASCII kept), creating parent folders; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return p


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line of a JSON Lines file (`save_jsonl`, `metrics.jsonl`, generations); blank lines skipped."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

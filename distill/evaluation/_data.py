"""Shared pieces of the dataset loaders: hub loading with a clear offline error, and local record files."""

from __future__ import annotations

import json
from pathlib import Path

from distill.core.errors import DataError


def load_hub(name: str, config: str | None, split: str, local_hint: str):
    """`datasets.load_dataset(name, config, split=split)`, or a DataError that says how to use a local file."""
    try:
        import datasets

        return (
            datasets.load_dataset(name, config, split=split)
            if config
            else datasets.load_dataset(name, split=split)
        )
    except Exception as e:  # offline, missing, renamed or a changed format: all end the same way for the user
        where = f"{name}" + (f" (config {config!r})" if config else "") + f", split {split!r}"
        raise DataError(
            f"could not load {where} from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Offline or without hub access, {local_hint}"
        ) from e


def read_records(path: Path) -> list[dict]:
    """Rows of a local table: JSON Lines (`.jsonl`), a JSON list of objects (`.json`) or Parquet (`.parquet`)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{path}: expected a JSON list of objects (or use .jsonl, one object per line)")
        return data
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not a JSON object ({e.msg})") from e
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
    return rows

"""Local documents and records, read one way wherever they are used: the transfer set's `data.files` and the
held-out text of the perplexity metric. Text files split on blank lines; JSON Lines, a JSON list of objects and
Parquet give one document per row from a named text field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from distill.core.errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".raw", "")


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


def check_text(value, where: str, field: str, field_hint: str = "data.text_field") -> str:
    """`value` when it is text, else one error naming where it came from and the setting that picks the field."""
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field {field!r} must hold text, got {type(value).__name__}; set {field_hint} to a text column"
        )
    return value


def _iter_jsonl(path: Path, text_field: str, field_hint: str, files_hint: str) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    what = e.msg.removesuffix(" at")  # "Invalid control character at" ends with it
                    raise DataError(
                        f"{path}:{i}: not valid JSON ({what} at column {e.colno}); fix or drop the line"
                    ) from None
                if not isinstance(row, dict) or text_field not in row:
                    keys = list(row) if isinstance(row, dict) else type(row).__name__
                    raise DataError(f"{path}:{i}: no field {text_field!r} (found {keys}); set {field_hint}")
                yield check_text(row[text_field], f"{path}:{i}", text_field, field_hint)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text ({e.reason}); convert it or drop it from {files_hint}"
        ) from None


def iter_file_documents(
    paths: list[Path], text_field: str, field_hint: str = "data.text_field", files_hint: str = "data.files"
) -> Iterator[str]:
    """Documents from local files: text (.txt, .md, .raw or no suffix) splits on blank lines; .jsonl, .json (a list
    of objects) and .parquet read `text_field`. `field_hint` and `files_hint` name the settings an error points
    to."""
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            try:
                text = path.read_text(encoding="utf-8-sig")  # a BOM is an editor's mark, not text
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it or drop it from {files_hint}"
                ) from None
            for block in text.split("\n\n"):
                if block.strip():
                    yield block.strip()
        elif suffix == ".json":
            for i, row in enumerate(read_records(path)):
                if text_field not in row:
                    raise DataError(
                        f"{path}: row {i} has no field {text_field!r} (found {sorted(row)}); set {field_hint}"
                    )
                yield check_text(row[text_field], f"{path} row {i}", text_field, field_hint)
        elif suffix == ".jsonl":
            yield from _iter_jsonl(path, text_field, field_hint, files_hint)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if text_field not in table.column_names:
                raise DataError(
                    f"{path}: no column {text_field!r} (found {table.column_names}); set {field_hint}"
                )
            for i, value in enumerate(table.column(text_field).to_pylist()):
                yield check_text(value, f"{path} row {i}", text_field, field_hint)
        else:
            raise DataError(
                f"{path}: unsupported file type {suffix!r}; use .txt, .md, .jsonl, .json or .parquet"
            )

"""Shared pieces of the dataset loaders: hub loading with a clear offline error, and local record files."""

from __future__ import annotations

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

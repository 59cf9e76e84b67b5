"""Packaged paths (word_lists/, recipes/, eval/) resolve the same way from any folder, in a checkout or a wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

import distill.core.resources as resources
from distill.core.resources import resource_glob, resource_path

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The layout of an installed wheel: no checkout above the package, the data under `distill/_data/`."""
    package = tmp_path / "site-packages" / "distill"
    corpus = package / "_data" / "recipes" / "data"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("one\n")
    (corpus / "b.txt").write_text("two\n")
    monkeypatch.setattr(resources, "_PACKAGE_DIR", package)
    monkeypatch.setattr(resources, "_REPO_ROOT", tmp_path / "no-checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return package / "_data"


def test_a_packaged_glob_resolves_inside_the_wheel(installed):
    assert resource_glob("recipes/data/*.txt") == [
        installed / "recipes/data/a.txt",
        installed / "recipes/data/b.txt",
    ]
    assert resource_path("recipes/data/a.txt") == installed / "recipes/data/a.txt"
    assert resource_glob("recipes/data/none*.txt") == [] and resource_glob("other/a.txt") == []


def test_the_working_directory_wins(installed):
    Path("recipes/data").mkdir(parents=True)
    Path("recipes/data/a.txt").write_text("mine\n")
    assert resource_glob("recipes/data/*.txt") == [Path("recipes/data/a.txt")]


def test_data_files_and_the_twin_cache_key_resolve_away_from_the_checkout(tmp_path, monkeypatch, tokenizer):
    """`data.files: [recipes/data/debug_corpus.txt]` and the word lists hashed for the twin cache are found from
    another folder, as they are when loaded."""
    import torch

    from distill.core.recipe import load_config
    from distill.counterfactual.twins import Counterfactuals
    from distill.data.transfer import _expand_files

    monkeypatch.chdir(tmp_path)
    assert _expand_files(["recipes/data/debug_corpus.txt"]) == [ROOT / "recipes/data/debug_corpus.txt"]
    cfg = load_config(ROOT / "recipes/debug.yaml", [f"data.cache_dir={tmp_path / 'cache'}"])
    cf = Counterfactuals(cfg, tokenizer)
    cf.precompute(cfg, torch.tensor([tokenizer.encode("he said that she would come back")[:6]] * 2))
    assert cf.table is not None and len(list((tmp_path / "cache" / "twins").glob("*.safetensors"))) == 1

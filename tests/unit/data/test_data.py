"""Data pipeline on small local files: reading, packing, validation split, cache, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from distill.core.errors import DataError
from distill.core.recipe import load_config
from distill.data.documents import iter_file_documents
from distill.data.transfer import build_blocks, pack, read_prompts, split_blocks


def _cfg(tmp_path, files, *extra):
    return load_config(
        "recipes/debug.yaml",
        [
            "data.source=files",
            f"data.files={json.dumps([str(f) for f in files])}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.block_size=8",
            *extra,
        ],
    )


def test_pack_joins_with_eos_and_drops_the_tail():
    blocks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4, eos_id=0)
    assert blocks.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def test_split_is_seeded_and_disjoint():
    blocks = torch.arange(40).view(20, 2)
    tr, va = split_blocks(blocks, 0.25, 100, seed=3)
    tr2, va2 = split_blocks(blocks, 0.25, 100, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert va.shape[0] == 5 and tr.shape[0] == 15
    assert not set(tr[:, 0].tolist()) & set(va[:, 0].tolist())
    _, capped = split_blocks(blocks, 0.5, 2, seed=0)
    assert capped.shape[0] == 2


def test_reads_txt_jsonl_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("first doc line one\nline two\n\nsecond doc\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth"}) + "\n"
    )
    pq.write_table(pa.table({"text": ["fifth", "sixth"]}), tmp_path / "c.parquet")
    docs = list(
        iter_file_documents([tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"], "text")
    )
    assert docs == ["first doc line one\nline two", "second doc", "third", "fourth", "fifth", "sixth"]


def test_blocks_are_built_and_cached(tmp_path, tokenizer):
    f = tmp_path / "corpus.txt"
    f.write_text("\n\n".join(["The nurse said that she would come back tomorrow."] * 20))
    cfg = _cfg(tmp_path, [f])
    train, val = build_blocks(cfg, tokenizer)
    assert train.shape[1] == 8 and val.shape[0] >= 1
    assert train.dtype == torch.long
    cached = list((tmp_path / "cache" / "blocks").glob("*.safetensors"))
    assert len(cached) == 1
    train2, val2 = build_blocks(cfg, tokenizer)
    assert torch.equal(train, train2) and torch.equal(val, val2)
    # every token of the text survives, in order, with EOS between documents
    ids = tokenizer.encode("The nurse said that she would come back tomorrow.")
    stream = torch.cat([train, val]).flatten().tolist()
    assert all(t in ids + [tokenizer.eos_token_id] for t in stream)


def test_glob_expands(tmp_path, tokenizer):
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text("\n\n".join([f"Document {i} says hello to the world."] * 10))
    cfg = _cfg(tmp_path, [tmp_path / "part*.txt"])
    train, val = build_blocks(cfg, tokenizer)
    assert train.shape[0] + val.shape[0] > 3


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("x.jsonl", '{"body": "hi"}\n', "no field 'text' (found ['body']); set data.text_field"),
        ("x.jsonl", '{"text": 3}\n', "field 'text' must hold text, got int"),
        ("x.jsonl", "{not json\n", "x.jsonl:1: not valid JSON"),
        ("x.csv", "a,b\n", "unsupported file type '.csv'"),
        ("x.txt", "", "transfer text is empty"),
        ("x.txt", "tiny", "at least 2 are needed"),
    ],
)
def test_bad_files_are_named(tmp_path, tokenizer, name, content, fragment):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(DataError) as e:
        build_blocks(_cfg(tmp_path, [f]), tokenizer)
    assert fragment in str(e.value)


def test_non_utf8_file(tmp_path, tokenizer):
    f = tmp_path / "bin.txt"
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        build_blocks(_cfg(tmp_path, [f]), tokenizer)


def test_glob_matching_nothing(tmp_path, tokenizer):
    with pytest.raises(DataError, match="matches no file"):
        build_blocks(_cfg(tmp_path, [tmp_path / "nothing*.txt"]), tokenizer)


def test_parquet_without_the_column(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"no column 'text' \(found \['content'\]\)"):
        build_blocks(_cfg(tmp_path, [tmp_path / "d.parquet"]), tokenizer)


def test_hf_dataset_offline_is_a_clear_error(tmp_path, tokenizer):
    cfg = load_config(
        "recipes/debug.yaml",
        ["data.source=hf", "data.name=someone/no-such-dataset", f"data.cache_dir={tmp_path}"],
    )
    with pytest.raises(DataError, match="someone/no-such-dataset"):
        build_blocks(cfg, tokenizer)


def test_prompt_files(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("# comment\n\nThe nurse said\n  The doctor said  \n")
    assert read_prompts(p) == ["The nurse said", "The doctor said"]
    p.write_text("# only a comment\n")
    with pytest.raises(DataError, match="holds no prompts"):
        read_prompts(p)
    with pytest.raises(DataError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    assert len(read_prompts("recipes/data/opening_lines.txt")) >= 100


def test_what_is_not_a_data_file_is_named_for_what_it_is(tmp_path):
    """A folder named like a file, a FIFO (which would block a read) and a looping link: each named, never read,
    never reported as "0 bytes, too short"."""
    import os

    from distill.data.transfer import preflight

    folder = tmp_path / "x.txt"
    folder.mkdir()
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    os.symlink(tmp_path / "b.txt", tmp_path / "a.txt")
    os.symlink(tmp_path / "a.txt", tmp_path / "b.txt")
    cases = {
        str(folder): "is a folder, not a file; give the files in it",
        str(fifo): "is a named pipe (FIFO), not a file",
        str(tmp_path / "a.txt"): "is a symbolic link that loops",
        str(tmp_path / "x*"): "matches only folders",
    }
    for given, fragment in cases.items():
        with pytest.raises(DataError) as e:
            preflight(_cfg(tmp_path, [given]).data)
        assert fragment in str(e.value) and "bytes" not in str(e.value), (given, str(e.value))


def test_a_glob_still_skips_the_folders_it_matches(tmp_path):
    from distill.data.transfer import _expand_files

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("text")
    assert _expand_files([str(tmp_path / "*")]) == [tmp_path / "a.txt"]

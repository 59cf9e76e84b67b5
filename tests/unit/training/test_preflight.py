"""`distill check` runs every check `train` runs before a model loads, and `train` runs them before one loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import debug_overrides

import distill.models.loading
from distill.cli import EXIT_USER_ERROR, main


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any model's weights are loaded: every check here must come before that."""

    def boom(*a, **k):
        raise AssertionError("a model's weights were loaded")

    monkeypatch.setattr(distill.models.loading, "load_pretrained", boom)
    monkeypatch.setattr(distill.models.loading, "load_teacher", boom)


def _run(command, tmp_path, teacher_dir, *extra):
    args = debug_overrides(tmp_path, teacher_dir, "train.max_steps=1", "tracking.wandb=false", *extra)
    return main([command, "recipes/debug.yaml", *args])


def test_check_refuses_what_train_would_refuse_all_at_once(tmp_path, teacher_dir, no_weights, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("he\tshe\nhe\tqueen\n")
    extra = [
        f"augment.pairs={pairs}",
        "data.files=[tests/data/corpus.txt, nope/missing.txt]",
        "student.layers=[0, 40]",
    ]
    assert _run("check", tmp_path, teacher_dir, *extra) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: recipes/debug.yaml: 3 problems:")
    assert "data.files: 'nope/missing.txt' matches no file" in err
    assert "pairs.tsv:2: 'he' is already paired with 'she' (line 1)" in err
    assert "student.layers [0, 40]: the teacher has 4 layers (0..3); [40] do not exist" in err
    assert not (tmp_path / "runs").exists()  # check writes nothing


def test_train_refuses_a_layer_the_teacher_lacks_before_loading_it(tmp_path, teacher_dir, no_weights, capsys):
    assert _run("train", tmp_path, teacher_dir, "student.layers=[0, 40]") == EXIT_USER_ERROR
    assert "the teacher has 4 layers (0..3); [40] do not exist" in capsys.readouterr().err


def test_check_reads_the_embedded_teachers_depth_without_converting_it(tmp_path, no_weights, capsys):
    rc = main(["check", "recipes/smoke.yaml", "student.layers=[0, 30]", f"data.cache_dir={tmp_path}"])
    assert rc == EXIT_USER_ERROR
    assert "the teacher has 30 layers (0..29); [30] do not exist" in capsys.readouterr().err
    assert not (tmp_path / "embedded").exists()


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        (
            "d.jsonl",
            '{"text": "fine"}\n{"text": ["not", "text"]}\n',
            "d.jsonl:2: field 'text' must hold text, got list",
        ),
        (
            "d.jsonl",
            '{"text": "fine"}\n{"text": "a\tb\x01"}\n',
            "d.jsonl:2: not valid JSON (Invalid control character at column 12)",
        ),
        ("d.txt", "", "d.txt: holds no text (empty, or whitespace only)"),
        ("d.txt", " \n\n\t\n  \n", "d.txt: holds no text (empty, or whitespace only)"),
        ("d.txt", "A short line.", "too short for 2 blocks of data.block_size=16 tokens"),
    ],
)
@pytest.mark.parametrize("command", ["check", "train"])
def test_data_content_is_checked_before_any_model_loads(
    tmp_path, teacher_dir, no_weights, capsys, command, name, content, fragment
):
    f = tmp_path / name
    f.write_text(content)
    assert _run(command, tmp_path, teacher_dir, f"data.files=[{f}]") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert f.read_text() == content


def test_a_parquet_column_that_is_not_text(tmp_path, teacher_dir, no_weights, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "d.parquet")
    assert _run("check", tmp_path, teacher_dir, f"data.files=[{tmp_path / 'd.parquet'}]") == EXIT_USER_ERROR
    assert "column 'text' must hold text, got int64" in capsys.readouterr().err


@pytest.fixture
def short_vocab_dir(tmp_path, tokenizer):
    """A model whose config vocabulary is 10 smaller than its tokenizer's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path / "short_vocab"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer) - 10, n_embd=16, n_layer=2, n_head=2)
    ).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused_by_check(
    tmp_path, short_vocab_dir, no_weights, capsys
):
    assert _run("check", tmp_path, short_vocab_dir, "student.layers=[0, 1]") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "its tokenizer has 400 tokens but its config vocab_size is 390" in err


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused_when_loaded(tmp_path, short_vocab_dir, capsys):
    from distill.core.errors import ModelError
    from distill.core.recipe import load_config

    cfg = load_config("recipes/debug.yaml", [f"teacher.name_or_path={short_vocab_dir}"])
    with pytest.raises(ModelError, match=r"has 400 tokens but the model's embedding has 390 rows"):
        distill.models.loading.load_teacher(cfg)
    # evaluation: one message, not an IndexError inside the probe
    out = tmp_path / "eval"
    assert (
        main(["eval", str(short_vocab_dir), "--suite", "pronoun_probe", "--out", str(out)]) == EXIT_USER_ERROR
    )
    err = capsys.readouterr().err
    assert "token ids 390..399 have no embedding" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_the_embedded_teachers_recorded_shape_is_its_gguf_metadata():
    import gguf

    from distill.models.embedded import EMBEDDED, embedded_gguf_path

    fields = gguf.GGUFReader(embedded_gguf_path("smollm2-135m")).fields
    assert int(fields["llama.block_count"].parts[-1][0]) == EMBEDDED["smollm2-135m"]["layers"]
    assert len(fields["tokenizer.ggml.tokens"].data) == EMBEDDED["smollm2-135m"]["vocab"]


def test_text_too_short_for_two_blocks_is_found_before_the_teacher_loads(
    tmp_path, teacher_dir, no_weights, capsys
):
    """Above the byte bound `check` can test without a tokenizer, below two blocks once tokenized: `train`
    tokenizes a corpus before it loads the teacher's weights."""
    f = tmp_path / "d.txt"
    f.write_text("The nurse said that she would come back tomorrow.")  # 49 bytes, about a dozen tokens
    assert _run("train", tmp_path, teacher_dir, f"data.files=[{f}]") == EXIT_USER_ERROR
    assert "at least 2 are needed (one to train, one to validate)" in capsys.readouterr().err


def test_check_of_the_debug_recipe_writes_nothing(tmp_path, no_weights, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[3]
    assert main(["check", str(root / "recipes/debug.yaml")]) == 0
    assert main(["check", str(root / "recipes/debug.yaml"), "student.layers=[0, 4]"]) == EXIT_USER_ERROR
    assert "the teacher has 4 layers (0..3); [4] do not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["check", "train"])
def test_an_absurd_accumulation_is_refused_before_the_run_folder_is_touched(
    tmp_path, teacher_dir, no_weights, capsys, command
):
    """The issue's train.grad_accum=1000000000: its step would draw 4e9 micro-batches before the first forward
    (terabytes of inputs) and never end; refused with the estimate and the fix, before anything is written."""
    assert _run(command, tmp_path, teacher_dir, "train.grad_accum=1000000000") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "train.grad_accum=1000000000 x train.micro_batch_size=2 x data.block_size=16" in last
    assert "TiB of inputs, more than this machine's" in last and "lower train.grad_accum" in last
    assert not (tmp_path / "runs").exists()


def test_check_prints_the_step_and_run_estimate(tmp_path, teacher_dir, no_weights, capsys):
    assert _run("check", tmp_path, teacher_dir, "train.grad_accum=3") == 0
    err = capsys.readouterr().err
    assert "one optimizer step: 3 micro-batches x 2 rows x 16 tokens = 96 tokens per process" in err
    assert "the run: 1 steps, 3 forward/backward passes per process" in err


def test_train_refuses_an_erase_layer_the_student_lacks_before_loading_it(
    tmp_path, teacher_dir, no_weights, capsys
):
    args = ("student.erase.rank=1", "student.erase.layers=[1, 2, -3]")
    assert _run("train", tmp_path, teacher_dir, *args) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert (
        "student.erase.layers [1, 2, -3]: the student has 2 layers" in err and "[2, -3] do not exist" in err
    )
    assert _run("check", tmp_path, teacher_dir, "student.erase.rank=65") == EXIT_USER_ERROR
    assert "student.erase.rank" in capsys.readouterr().err

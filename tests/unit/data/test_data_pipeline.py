"""The data pipeline in worker processes gives exactly what it gives in-process, and is cached."""

from __future__ import annotations

import torch
from conftest import CORPUS, debug_overrides

from distill.core.files import read_jsonl
from distill.core.parallel import ordered_map
from distill.core.recipe import load_config
from distill.counterfactual.twins import Counterfactuals, build_twins, make_step_batch
from distill.data.transfer import tokenize_documents
from distill.training.loop import train


def _square(state, x):
    return state * x * x


def test_ordered_map_keeps_order_for_any_worker_count():
    items = list(range(50))
    for workers in (0, 1, 2, 3):
        assert list(ordered_map(_square, iter(items), workers, 2)) == [2 * x * x for x in items]


def test_parallel_tokenization_equals_serial(tokenizer):
    docs = CORPUS[:300]
    serial = list(tokenize_documents(iter(docs), tokenizer, batch=16))
    parallel = list(tokenize_documents(iter(docs), tokenizer, batch=16, workers=2))
    assert serial == parallel and len(serial) == 300


def test_precomputed_twins_equal_built_twins(tmp_path, tokenizer):
    cfg = load_config(
        "recipes/debug.yaml",
        ["augment.mode=append", "perturb.kind=mean", f"data.cache_dir={tmp_path}", "data.num_workers=2"],
    )
    cf = Counterfactuals(cfg, tokenizer)
    ids = [t for doc in tokenize_documents(iter(CORPUS[:400]), tokenizer) for t in doc]
    blocks = torch.tensor(ids[: 130 * 16]).view(130, 16)
    cf.precompute(cfg, blocks)
    assert len(list((tmp_path / "twins").glob("*.safetensors"))) == 1
    rows = [3, 0, 129, 64, 65]
    table, built = cf.twins(blocks[rows], rows), build_twins(cf, blocks[rows])
    assert table["changed"].any()
    for k in built:
        assert torch.equal(table[k], built[k]), k
    a = make_step_batch(blocks[rows], cf, rows)
    assert torch.equal(a.student_ids, torch.cat([blocks[rows], built["twin_ids"][built["changed"]]]))


def test_training_with_workers_equals_training_without(tmp_path, teacher_dir, one_thread):
    def run(workers):
        over = debug_overrides(
            tmp_path / f"w{workers}",
            teacher_dir,
            "train.max_steps=3",
            "train.log_every=1",
            "tracking.wandb=false",
            "augment.mode=append",
            "perturb.kind=mean",
            f"data.num_workers={workers}",
        )
        recs = read_jsonl(train(load_config("recipes/debug.yaml", over)) / "metrics.jsonl")
        return [r for r in recs if "train/loss" in r]

    a, b = run(0), run(2)
    assert [r["train/loss"] for r in a] == [r["train/loss"] for r in b]
    assert all(0 <= r["train/data_wait_frac"] < 1 for r in a + b)


def _torch_sum(state, n):
    return float(torch.ones(n, 64).matmul(torch.ones(64, 8)).sum())


def test_workers_do_not_hang_after_the_parent_used_its_thread_pool():
    """A forked worker entering the parent's OpenMP pool would hang; the workers run one thread each."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(512, 512) @ torch.randn(512, 512)  # the parent's thread pool is now live
        assert list(ordered_map(_torch_sum, iter([256, 512]), 2, None)) == [256 * 64 * 8.0, 512 * 64 * 8.0]
    finally:
        torch.set_num_threads(n_threads)

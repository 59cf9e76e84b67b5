"""The distributed path, run for real: the debug recipe on 2 CPU processes (gloo) through `accelerate launch`.

One test, two runs of the same recipe (4 steps, checkpoints every 2) on a dropout-free 4-layer teacher:
  one  - 1 process, in this pytest process, micro_batch_size 4, uninterrupted;
  two  - 2 processes, micro_batch_size 2 each, stopped after its step-2 checkpoint (as a preempted job would be),
         then launched again, which resumes it to step 4;
and last, one process asked to continue `two` must refuse a checkpoint written by two.
`MicroBatches` hands process r rows [r * mbs, (r + 1) * mbs) of each global micro-batch of mbs * world rows, and
its epoch length is n // (mbs * world): 1 process x 4 rows and 2 processes x 2 rows see the same rows in the same
micro-batches and the same epochs. Doubling grad_accum instead would give the same rows per step but a different
epoch length (n // 2 instead of n // 4 micro-batches), so the two would part ways at the first epoch boundary.
With dropout off and augment.p = 0.5 (the twin-selection stream must also be global), the two runs compute the
same sums in a different order, so they agree to float32 rounding, not bit for bit.

This file is also the worker that `accelerate launch` runs for the interrupted run:
`python tests/system/test_distributed.py STOP_AFTER RECIPE [key=value ...]` calls `train(cfg, stop_after=STOP_AFTER)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_CONFIG = "recipes/accelerate/cpu_multiprocess.yaml"
# float32 sums in another order. Measured (2 CPU cores, torch 2.13): every logged number within 3e-7 relative
# (train/loss 6e-8; train/loss_kd, about 3e-4, within 1e-8 absolute) and the final weights within 5e-8. The
# tolerances leave a 20x margin or more; a real fault (a wrong row, a wrong normaliser, the LR schedule stepped once
# per process) moves them by 1e-3 or more.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-7
# The probes' numbers are statistics of differences of log-probabilities (log P(she) - log P(he) per occupation,
# then a correlation or a standard deviation over ~0.1-nat scores): float32 rounding of ~1e-6 in a log-probability
# becomes ~1e-5 of such a statistic, so they are compared to that absolute tolerance (4e-7 apart has been seen).
PROBE_ATOL = 2e-5
WEIGHT_ATOL = 1e-6


def _overrides(tmp_path: Path, teacher_dir: Path, name: str, micro_batch_size: int) -> list[str]:
    return [
        f"teacher.name_or_path={teacher_dir}",
        "student.layers=[0, 3]",
        f"run.name={name}",
        f"run.output_dir={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.files=[tests/data/corpus.txt]",
        "data.block_size=16",
        "data.val_fraction=0.1",
        "augment.p=0.5",
        f"train.micro_batch_size={micro_batch_size}",
        "train.max_steps=4",
        'train.mixed_precision="no"',  # float32 on every CPU (`auto` is bf16 on one with AVX512_BF16/AMX)
    ]


def _launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`accelerate launch` with the shipped 2-process CPU config; CUDA hidden so it is gloo on CPU everywhere."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", WANDB_MODE="offline")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", LAUNCH_CONFIG, *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    (tmp_path / f"launch_{time.monotonic_ns()}.log").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stderr[-4000:]}"
    return out


@pytest.fixture
def dropout_free_teacher(tmp_path, tokenizer):
    """The conftest teacher without dropout: 1 and 2 processes would otherwise draw different masks."""
    from conftest import make_gpt2

    model = make_gpt2(tokenizer, n_layer=4)
    model.config.update({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    d = tmp_path / "teacher"
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path, dropout_free_teacher):
    from conftest import list_checkpoints
    from safetensors.torch import load_file

    from distill.core.errors import FairDistillError
    from distill.core.files import read_jsonl
    from distill.core.recipe import load_config
    from distill.training.loop import train

    one = train(load_config("recipes/debug.yaml", _overrides(tmp_path, dropout_free_teacher, "one", 4)))

    two_args = _overrides(tmp_path, dropout_free_teacher, "two", 2)
    _launch([str(Path(__file__).relative_to(ROOT)), "2", "recipes/debug.yaml", *two_args], tmp_path)
    two = tmp_path / "runs" / "two"
    assert [p.name for p in list_checkpoints(two)] == ["step_2"] and not (two / "final").exists()
    resumed = _launch(["-m", "distill.cli", "train", "recipes/debug.yaml", *two_args], tmp_path)
    assert resumed.stderr.count("resuming") == 1, resumed.stderr[-2000:]
    assert "2 processes" in resumed.stderr

    # the loss trajectory and every other logged number: same steps, same values within float32 rounding
    rec_one = {r["step"]: r for r in read_jsonl(one / "metrics.jsonl")}
    recs_two = read_jsonl(two / "metrics.jsonl")
    rec_two = {r["step"]: r for r in recs_two}
    assert len(rec_two) == len(recs_two), "a step was written twice (more than one writer, or a bad resume)"
    assert sorted(rec_two) == sorted(rec_one) == [0, 1, 2, 3, 4]
    compared = 0
    for step, r1 in rec_one.items():
        r2 = rec_two[step]
        for key, v1 in r1.items():
            if (
                key.startswith(("time/", "train/tokens_per_s", "train/step_time_s", "train/data_wait_frac"))
                or key == "step"
            ):
                continue
            assert key in r2, (step, key)
            atol = PROBE_ATOL if key.startswith("probe/") else LOSS_ATOL
            assert r2[key] == pytest.approx(v1, rel=LOSS_RTOL, abs=atol), (step, key, v1, r2[key])
            compared += 1
    assert all(rec_two[s]["train/tokens"] == rec_one[s]["train/tokens"] for s in range(1, 5))
    assert 0 < rec_two[4]["train/changed_frac"] < 1  # p = 0.5 really selected some twins and skipped others
    assert compared > 40

    # the final weights
    w1 = load_file(str(one / "final" / "model.safetensors"))
    w2 = load_file(str(two / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert worst <= WEIGHT_ATOL, worst
    start = load_file(str(dropout_free_teacher / "model.safetensors"))
    moved = w2["transformer.h.1.mlp.c_fc.weight"] - start["transformer.h.3.mlp.c_fc.weight"]
    assert float(moved.abs().max()) > 1e-4  # it trained (student layer 1 is teacher layer 3)

    # one writer: one W&B run (relaunched under the same id), one checkpoint tree with every process's RNG
    wandb_runs = sorted((two / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2, wandb_runs  # one per launch, from the main process only
    assert len({p.name.rsplit("-", 1)[-1] for p in wandb_runs}) == 1, wandb_runs
    assert len(list(two.rglob("offline-run-*"))) == 2
    assert [p.name for p in list_checkpoints(two)] == ["step_2", "step_4"]
    assert (two / "checkpoints" / "latest").read_text() == "step_4"
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["latest", "step_2", "step_4"]
    for ckpt in list_checkpoints(two):
        names = {p.name for p in ckpt.iterdir()}
        assert {"loop_rng_0.pt", "loop_rng_1.pt", "trainer_state.json", "complete"} <= names, names
        assert len(list(ckpt.glob("model*.safetensors"))) == 1, names
    assert not list(two.glob(".tmp*"))

    # a checkpoint belongs to its process count: one process refuses it instead of replaying data
    more = load_config("recipes/debug.yaml", [*two_args, "train.max_steps=6"])
    with pytest.raises(FairDistillError, match="written by 2 processes and this run has 1"):
        train(more)


# The worker: `accelerate launch tests/system/test_distributed.py STOP_AFTER RECIPE [key=value ...]`.
if __name__ == "__main__":
    import logging

    from distill.core.recipe import load_config
    from distill.training.loop import train

    logging.basicConfig(level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    train(load_config(sys.argv[2], sys.argv[3:]), stop_after=int(sys.argv[1]))

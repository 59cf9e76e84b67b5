"""train.mixed_precision: what `auto` resolves to and why, and bf16 training tracking float32 on the debug recipe."""

from __future__ import annotations

import logging
import os

import pytest
from conftest import debug_overrides

from distill.core.files import read_jsonl
from distill.core.precision import (
    CPU_BF16_FLAGS,
    cpu_bf16_flags,
    emulated_bf16_warning,
    resolve_mixed_precision,
)
from distill.core.recipe import load_config
from distill.training.loop import train


def _cpuinfo(*flags: str) -> str:
    line = "flags\t\t: fpu vme sse sse2 avx2 avx512f avx512bw " + " ".join(flags)
    return f"processor\t: 0\n{line}\n\nprocessor\t: 1\n{line}\n"


@pytest.mark.parametrize(
    "setting,flags,expect,reason",
    [
        ("auto", ("avx512_bf16",), "bf16", "avx512_bf16"),
        ("auto", ("amx_bf16", "amx_tile"), "bf16", "amx_bf16"),
        ("auto", ("avx512_bf16", "amx_bf16"), "bf16", "avx512_bf16 and amx_bf16"),
        ("auto", (), "no", "full precision"),
        ("no", ("avx512_bf16",), "no", "train.mixed_precision=no"),
        ("bf16", (), "bf16", "train.mixed_precision=bf16"),
    ],
)
def test_auto_picks_bf16_only_on_a_cpu_that_multiplies_it(setting, flags, expect, reason):
    mp, why = resolve_mixed_precision(setting, cuda=False, cpuinfo=_cpuinfo(*flags))
    assert mp == expect and reason in why


def test_cpu_flags_are_read_from_cpuinfo_and_absent_without_one():
    assert cpu_bf16_flags(_cpuinfo("avx512_bf16")) == ["avx512_bf16"]
    assert cpu_bf16_flags("") == []
    assert cpu_bf16_flags("flags : avx512_bf16_extra") == []  # whole flags only
    assert set(CPU_BF16_FLAGS) == {"avx512_bf16", "amx_bf16"}


def test_bf16_on_a_cpu_that_emulates_it_is_warned_about_with_the_fix():
    warning = emulated_bf16_warning("bf16", cpu=True, cpuinfo=_cpuinfo())
    assert "emulated" in warning and "train.mixed_precision=auto" in warning
    assert emulated_bf16_warning("bf16", cpu=True, cpuinfo=_cpuinfo("amx_bf16")) is None
    assert emulated_bf16_warning("bf16", cpu=False, cpuinfo=_cpuinfo()) is None  # a GPU
    assert emulated_bf16_warning("no", cpu=True, cpuinfo=_cpuinfo()) is None


def _run(tmp_path, teacher_dir, precision: str, caplog):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # one process, two precisions: Accelerate's state is process-wide
    cfg = load_config(
        "recipes/debug.yaml",
        debug_overrides(
            tmp_path,
            teacher_dir,
            f"run.name=run_{precision}",
            f"train.mixed_precision={precision!r}",
            "data.val_fraction=0.1",
            "train.max_steps=20",
            "train.log_every=1",
            "train.eval_every=0",
            "train.probe_every=0",
            "train.save_every=0",
            "tracking.wandb=false",
        ),
    )
    with caplog.at_level(logging.INFO, logger="distill"):
        run_dir = train(cfg)
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]


BF16_LOSS_TOLERANCE = 0.02
"""Relative: bf16 rounds each matmul input to 8 significant bits (0.4%), and 20 AdamW steps at lr 1e-3 carry
those differences into the weights; the losses of the two runs stay within 2% of each other at every step."""


@pytest.mark.slow
def test_twenty_bf16_steps_track_float32_within_the_documented_tolerance(
    tmp_path, teacher_dir, one_thread, caplog
):
    fp32 = _run(tmp_path, teacher_dir, "no", caplog)
    assert "precision: no (train.mixed_precision=no)" in caplog.text
    # distill/core/cpu_heap.py: on a CPU run with glibc, `auto` (the default) keeps freed blocks, and the log says so
    from distill.core.cpu_heap import _glibc

    if "FAIRDISTILL_CPU_HEAP" not in os.environ and _glibc()[0] is not None:
        assert "cpu heap: freed blocks kept for reuse (auto: CPU run; glibc mallopt" in caplog.text
    else:
        assert "cpu heap: " in caplog.text
    caplog.clear()
    bf16 = _run(tmp_path, teacher_dir, "bf16", caplog)
    assert "precision: bf16 autocast (train.mixed_precision=bf16)" in caplog.text
    assert ("bf16 matmuls are emulated" in caplog.text) == (not cpu_bf16_flags())  # this machine's CPU
    assert len(fp32) == len(bf16) == 20
    worst = 0.0
    for a, b in zip(fp32, bf16):
        for key in ("train/loss", "train/loss_kd", "train/loss_ce"):
            assert b[key] == pytest.approx(a[key], rel=BF16_LOSS_TOLERANCE), (a["step"], key)
            worst = max(worst, abs(b[key] - a[key]) / abs(a[key]))
    print(f"largest relative loss difference bf16 vs float32 over 20 steps: {worst:.4f}")
    assert worst > 0  # bf16 really ran: the two are not bit-identical
    assert fp32[-1]["train/loss"] < fp32[0]["train/loss"] and bf16[-1]["train/loss"] < bf16[0]["train/loss"]

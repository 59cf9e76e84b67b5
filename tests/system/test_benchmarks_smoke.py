"""The benchmark scripts run at tiny sizes and end with their ratio lines. Timings are never checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = ROOT / ".cache" / "fairdistill" / "embedded" / "smollm2-135m" / "config.json"
RATIO = re.compile(r"^\S.* -?[0-9.e+-]+ \(target (<=|>=) [0-9.]+\) (met|MISSED)$")


@pytest.fixture(scope="module")
def embedded_teacher() -> Path:
    """The embedded SmolLM2-135M converted under .cache/ (once; about 30 s), as `make distill` leaves it: these
    benchmarks read its tokenizer and weights, and they run in CI rather than skip."""
    from distill.models.embedded import materialize_embedded

    folder = materialize_embedded("smollm2-135m", ROOT / ".cache" / "fairdistill")
    assert (folder / "config.json").is_file() and folder / "config.json" == EMBEDDED
    return folder


def _run(script: str, *args: str, timeout: int = 600) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_kd_loss_benchmark_prints_ratios_last():
    lines = _run(
        "bench_kd_loss.py",
        "--quick",
        "--vocab",
        "512",
        "--hidden",
        "16",
        "--batch",
        "2",
        "--seq",
        "16",
        "--no-trl",
    )
    assert RATIO.match(lines[-1]) and "time_ratio" in lines[-1], lines[-3:]
    assert RATIO.match(lines[-2]) and "peak_memory_ratio" in lines[-2], lines[-3:]
    # the float32 agreement line of the fused loss
    agree = [line for line in lines if line.strip().startswith("fused:") and "rel. diff" in line]
    assert agree and float(agree[0].split("full ")[1].split(",")[0]) < 1e-5


@pytest.mark.usefixtures("embedded_teacher")
def test_generation_benchmark_runs():
    lines = _run("bench_generation.py", "--quick", "--prompts", "3", "--max-new-tokens", "4")
    assert RATIO.match(lines[-1]) and lines[-1].startswith("generation_speedup"), lines[-3:]
    assert "  outputs identical: yes" in lines


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_teacher")
def test_counterfactual_benchmark_runs():
    lines = _run("bench_counterfactual.py", "--quick", "--reps", "1", "--settings", "append", "--seq", "32")
    assert RATIO.match(lines[-1]) and "counterfactual_overhead" in lines[-1], lines[-3:]
    assert any("unchanged rows: once" in line for line in lines)


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_teacher")
def test_teacher_cache_benchmark_runs():
    lines = _run(
        "bench_teacher_cache.py", "--quick", "--reps", "1", "--seq", "32", "--blocks", "4", "--top-k", "8"
    )
    assert RATIO.match(lines[-1]) and "cached method step" in lines[-1], lines[-3:]
    assert RATIO.match(lines[-2]) and "cached plain-KD step" in lines[-2], lines[-3:]
    kl = [line for line in lines if line.startswith("final hidden states")]
    assert kl and "bytes per token" in kl[0]


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_teacher")
def test_data_benchmark_runs():
    lines = _run("bench_data.py", "--quick", "--docs", "300")
    assert RATIO.match(lines[-1]) and "data wait share" in lines[-1], lines[-3:]
    assert any(line.startswith("tokenize + pack, 2 workers") for line in lines)


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_teacher")
def test_step_benchmark_prints_mfu_and_the_peers_last():
    both = ("--precisions", "no", "bf16")  # tiny enough to time bf16 where it is emulated too
    lines = _run("bench_step.py", "--quick", "--seq", "32", "--no-memory", "--peak-size", "256", *both)
    assert any(line.startswith("matmul peak 256^3 torch.bfloat16") for line in lines)
    assert any(
        line.startswith("B x T = ") and "; student attention sdpa (train.attention=auto)" in line
        for line in lines
    )
    rows = [line.split() for line in lines if line.startswith("  ") and line.split()[0] in ("ce", "method")]
    assert len(rows) == 4 and all(r[-1].endswith("%") for r in rows), rows
    tail = [line for line in lines if RATIO.match(line)]
    assert any("method step bf16 speedup" in line for line in tail)
    assert any("method step bf16 MFU" in line for line in tail)
    assert any("bf16 fairdistill plain-KD step / hf_kd step, time" in line for line in tail)
    assert RATIO.match(lines[-1]), lines[-3:]


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_teacher")
def test_step_benchmark_times_the_student_with_eager_attention_when_asked():
    args = ("--quick", "--seq", "32", "--no-memory", "--peak-size", "256", "--precisions", "no")
    lines = _run("bench_step.py", *args, "--steps", "ce", "--attention", "eager")
    assert any(
        line.startswith("B x T = ") and "; student attention eager (train.attention=eager)" in line
        for line in lines
    )
    assert any(line.split()[:2] == ["ce", "no"] for line in lines if line.startswith("  "))


def test_step_benchmark_times_bf16_by_default_only_where_it_is_native():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_step
    from _common import native_bf16

    native, why = native_bf16()
    assert bench_step.parse(["--quick"]).precisions == (["no", "bf16"] if native else ["no"])
    assert bench_step.parse(["--quick", "--precisions", "bf16"]).precisions == ["bf16"]
    assert "bf16" in why


def test_make_bench_skips_the_bf16_runs_where_bf16_is_emulated(monkeypatch, capsys):
    """Where the CPU has no native bf16 the bf16-only run of the loss benchmark is skipped (with the reason), the
    float32 one runs; `--bf16` would run both."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _common
    import run_all

    monkeypatch.setattr(
        _common, "native_bf16", lambda: (False, "the CPU has neither avx512_bf16 nor amx_bf16")
    )
    assert run_all.main(["--quick", "--only", "bench_kd_loss.py"]) == 0
    out = capsys.readouterr().out
    assert "bf16 is emulated here (the CPU has neither avx512_bf16 nor amx_bf16)" in out
    assert "bench_kd_loss.py --quick --dtype bfloat16: skipped (bf16 is emulated here)" in out
    assert out.count("######## python benchmarks/bench_kd_loss.py") == 1 and "time_ratio" in out

"""Two of the GPU check's parts: the CUDA tests (`pytest -m gpu tests/gpu`) and the training-step benchmark
(`bench_step.py`) on random GPT-2-shaped teachers and students. Each returns {"status", "detail", "numbers"}."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from _gpu_check_env import Ctx, run_logged, tail

# the steps the benchmark must report (`trl_kd` only where trl imports: else recorded as skipped)
BENCH_STEPS = ("ce", "cached_kd", "method", "live_kd", "hf_kd")
# bench_step's arguments: on a GPU, the recipes' micro-batch of 8 x 1,024 in bf16 autocast against a bf16 GEMM
# peak of 8,192^3; tiny (a dry run, --tiny, or a forced run without CUDA): 32 wide, B x T = 2 x 16, one repetition
BENCH_GPU = ["--device", "cuda", "--batch", "8", "--seq", "1024", "--reps", "3", "--peak-size", "8192"]
BENCH_TINY = ["--quick", "--batch", "2", "--seq", "16", "--peak-size", "128"]


def junit_outcomes(path) -> dict:
    """{test id: "passed" | "failed" | "skipped", ...} and skip reasons from pytest's JUnit XML."""
    outcomes, reasons = {}, {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = [child.tag for child in case]
        if "failure" in kinds or "error" in kinds:
            outcomes[name] = "failed"
        elif "skipped" in kinds:
            outcomes[name] = "skipped"
            reasons[name] = case.find("skipped").get("message", "")
        else:
            outcomes[name] = "passed"
    return {"outcomes": outcomes, "reasons": reasons}


def tests_part(ctx: Ctx) -> dict:
    """`pytest -m gpu tests/gpu`. On a GPU every test must pass (a skip is a failure: the device was there);
    without CUDA every one must be skipped, saying that it needs a CUDA device."""
    xml = ctx.work / "junit.xml"
    cmd = [ctx.python, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    hide = {} if ctx.cuda else {"CUDA_VISIBLE_DEVICES": ""}  # a dry run on a GPU machine checks the skips too
    rc, text = run_logged(ctx, "tests", [*cmd, f"--junitxml={xml}"], timeout=240, **hide)
    if not xml.is_file():
        return {
            "status": "fail",
            "detail": f"pytest wrote no report (exit status {rc})",
            "numbers": {},
            "log": tail(text),
        }
    found = junit_outcomes(xml)
    counts = {k: sum(v == k for v in found["outcomes"].values()) for k in ("passed", "failed", "skipped")}
    numbers = {**counts, "tests": found["outcomes"]}
    if not found["outcomes"]:
        return {"status": "fail", "detail": "no test is marked gpu in tests/gpu", "numbers": numbers}
    if ctx.cuda:
        ok = rc == 0 and counts["failed"] == counts["skipped"] == 0
        failed = [k for k, v in found["outcomes"].items() if v != "passed"]
        detail = f"{counts['passed']} passed" if ok else f"not passed: {', '.join(failed[:5])}"
        return {
            "status": "pass" if ok else "fail",
            "detail": detail,
            "numbers": numbers,
            "log": "" if ok else tail(text),
        }
    why = [r for r in found["reasons"].values() if "CUDA" not in r]
    if counts["skipped"] != len(found["outcomes"]) or why:
        detail = f"without CUDA every gpu test must be skipped for it: {counts} {why[:1]}"
        return {"status": "fail", "detail": detail, "numbers": numbers, "log": tail(text)}
    detail = f"{counts['skipped']} collected, all skipped without CUDA, saying so"
    return {"status": "dry-run" if ctx.mode == "dry-run" else "skipped", "detail": detail, "numbers": numbers}


def bench_numbers(result: dict) -> dict:
    """The benchmark's JSON, kept to what the check reports: per step tokens/s, peak memory, MFU, seconds."""
    steps = {
        r["step"]: {
            k: r[k] for k in ("wall_s", "tokens", "tokens_per_s", "mfu", "flop", "peak_bytes", "added_bytes")
        }
        for r in result["steps"]
    }
    keep = ("models", "device", "batch", "seq", "reps", "twin_rows", "attention", "vocab")
    return {
        **{k: result[k] for k in keep},
        "precision": result["steps"][0]["precision"],
        "student_matmul_params": result["student_matmul_params"],
        "teacher_matmul_params": result["teacher_matmul_params"],
        "matmul_peak": {
            "n": result["matmul_peak"]["n"],
            "flop_per_s": result["matmul_peak"]["flop_per_s"]["bf16"],
        },
        "steps": steps,
        "skipped": result["skipped"],
        "ratios": result["ratios"],
    }


def bench_part(ctx: Ctx, student: str) -> dict:
    """One training step of each variant (`bench_step.py --student <student>`) in bf16 autocast."""
    out = ctx.work / f"bench_{student}.json"
    sizes = BENCH_TINY + ["--device", "cuda" if ctx.cuda else "cpu"] if ctx.tiny else BENCH_GPU
    cmd = [ctx.python, "benchmarks/bench_step.py", "--student", student, "--precisions", "bf16", *sizes]
    rc, text = run_logged(ctx, f"bench:{student}", [*cmd, "--no-memory", "--json", str(out)], timeout=300)
    if rc != 0 or not out.is_file():
        return {
            "status": "fail",
            "detail": f"bench_step.py exit status {rc}",
            "numbers": {},
            "log": tail(text),
        }
    numbers = bench_numbers(json.loads(out.read_text()))
    missing = [s for s in BENCH_STEPS if s not in numbers["steps"]]
    if missing:
        return {
            "status": "fail",
            "detail": f"steps not measured: {missing}",
            "numbers": numbers,
            "log": tail(text),
        }
    m = numbers["steps"]["method"]
    detail = (
        f"{numbers['models']}, B x T = {numbers['batch']} x {numbers['seq']}: method {m['tokens_per_s']:.0f} tokens/s, "
        f"MFU {100 * m['mfu']:.1f}%"
    )
    if ctx.mode == "dry-run":
        return {"status": "dry-run", "detail": detail, "numbers": numbers}
    return {"status": "pass", "detail": detail, "numbers": numbers}

"""The GPU check (`scripts/gpu_check.sh`) as it runs without a CUDA device: its dry run runs every part, marks each
"dry-run", and writes a result JSON that conforms to its schema, with one measured step of every benchmark variant
at tiny sizes and every launch and recipe validated. Timings are never checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _gpu_check_report import problems, validate  # noqa: E402
from gpu_check import PART_NAMES  # noqa: E402


def _check(out: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), OUT=str(out))
    return subprocess.run(
        ["bash", "scripts/gpu_check.sh", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check_out")
    proc = _check(out, "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def _part(result: dict, name: str) -> dict:
    return next(p for p in result["parts"] if p["name"] == name)


def test_the_dry_run_runs_every_part_and_its_json_conforms_to_the_schema(dry_run):
    result, md = dry_run
    assert validate(result) == []
    assert result["mode"] == "dry-run" and result["tiny"] and result["ok"]
    assert [p["name"] for p in result["parts"]] == PART_NAMES
    assert {p["status"] for p in result["parts"]} == {"dry-run"}, [
        (p["name"], p["detail"]) for p in result["parts"]
    ]
    assert result["versions"]["torch"] == torch.__version__
    for p in result["parts"]:
        assert f"| {p['name']} | dry-run |" in md


def test_the_dry_run_collects_the_cuda_tests_and_each_says_it_needs_cuda(dry_run):
    n = _part(dry_run[0], "tests")["numbers"]
    assert n["passed"] == n["failed"] == 0 and n["skipped"] == len(n["tests"]) > 0
    assert all(t.startswith("tests.gpu.test_cuda_paths::") and t.endswith("cuda]") for t in n["tests"])


@pytest.mark.parametrize("student", ["gpt2-6L", "gpt2-large-18L"])
def test_the_dry_run_measures_one_step_of_every_variant_at_tiny_sizes(dry_run, student):
    n = _part(dry_run[0], f"bench:{student}")["numbers"]
    assert (n["device"], n["precision"], n["vocab"], n["batch"], n["seq"]) == ("cpu", "bf16", 50257, 2, 16)
    assert {"ce", "cached_kd", "method", "live_kd", "hf_kd"} <= set(n["steps"])
    for step in n["steps"].values():
        assert step["tokens_per_s"] > 0 and step["mfu"] > 0 and step["peak_bytes"] is None  # no CUDA here
    # the method trains on the twins too: more tokens per step than plain KD
    assert n["steps"]["method"]["tokens"] == (2 + n["twin_rows"]) * 16 > n["steps"]["cached_kd"]["tokens"]
    assert set(n["steps"]) | set(n["skipped"]) == {
        "ce",
        "cached_kd",
        "method",
        "method_log_ratio",
        "live_kd",
        "hf_kd",
        "trl_kd",
    }


def test_the_dry_run_resolves_every_launch_and_validates_every_recipe(dry_run):
    result = dry_run[0]
    for name in PART_NAMES:
        if not name.startswith(("train:", "resume:")):
            continue
        n = _part(result, name)["numbers"]
        fsdp = name.endswith(":fsdp")
        assert n["accelerate"]["use_fsdp"] is fsdp and n["accelerate"]["num_processes"] == 1
        assert n["accelerate"]["mixed_precision"] == "bf16"
        assert n["command"].startswith("python -m distill.launch --config_file recipes/accelerate/")
        assert ("fsdp_8gpu.yaml --num_processes 1 --" in n["command"]) is fsdp
        assert "tracking.wandb=false" in n["command"] and n["recipe"]["steps"] >= 4
    gpt2 = _part(result, "train:gpt2:single_gpu")["numbers"]["recipe"]
    assert gpt2["recipe"] == "recipes/gpt2_to_distilgpt2.yaml" and gpt2["student_layers"] == [
        0,
        2,
        4,
        7,
        9,
        11,
    ]


def test_the_schema_names_what_a_broken_result_gets_wrong(dry_run):
    result = json.loads(json.dumps(dry_run[0]))
    result["parts"][0]["status"] = "maybe"
    del _part(result, "bench:gpt2-6L")["numbers"]["steps"]["method"]
    _part(result, "tests")["numbers"]["passed"] = "0"
    found = validate(result)
    assert "$.parts[0].status: 'maybe' is not one of ['pass', 'fail', 'skipped', 'dry-run']" in found
    assert "$.parts[2].numbers.steps: missing 'method'" in found
    assert any(line.startswith("$.parts[1].numbers.passed: expected integer") for line in found)
    assert problems(True, {"type": "number"}) == ["$: expected number, got bool True"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--only", "bench:gpt3"], "--only bench:gpt3: no such part; choose from prerequisites tests"),
        (["--dry-run", "--force"], "argument --force: not allowed with argument --dry-run"),
    ],
)
def test_bad_arguments_get_one_error_naming_the_value_and_the_choices(tmp_path, args, message):
    proc = _check(tmp_path, *args, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="without CUDA only: on a GPU the check runs for real")
def test_without_cuda_the_check_is_a_dry_run_unless_forced(tmp_path):
    proc = _check(tmp_path, "--only", "prerequisites", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["mode"] == "dry-run" and [p["status"] for p in result["parts"]] == ["dry-run"]

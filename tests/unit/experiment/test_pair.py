"""`distill run`'s pair: the baseline found beside a recipe, each training's command line, and where a run of the
default falls against the five seeds."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from distill.core.recipe import load_config
from distill.experiment import pair

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "data" / "golden"


def test_the_baseline_is_the_recipes_twin_beside_it():
    assert (
        pair.default_baseline("recipes/smollm2-135m_to_24L.yaml")
        == "recipes/smollm2-135m_to_24L_baseline.yaml"
    )
    assert pair.default_baseline("recipes/smollm2-135m_to_24L_baseline.yaml") is None  # a baseline has none
    assert pair.default_baseline("recipes/debug.yaml") is None
    shipped = pair.default_baseline("gpt2_to_distilgpt2.yaml")  # a shipped recipe's name, from anywhere
    assert shipped and Path(shipped).name == "gpt2_to_distilgpt2_baseline.yaml" and Path(shipped).is_file()


def test_each_training_is_its_own_process():
    assert pair.train_argv("r.yaml", ["a=1"], None) == [
        sys.executable,
        "-m",
        "distill.cli",
        "train",
        "r.yaml",
        "a=1",
    ]
    launch = ["--config_file", "c.yaml"]
    assert pair.train_argv("r.yaml", [], launch, verbose=True) == [
        *[sys.executable, "-m", "distill.launch", "--config_file", "c.yaml", "--"],
        *["-v", "train", "r.yaml"],
    ]


def test_only_the_default_pair_is_read_against_the_five_seeds():
    method, baseline = load_config(pair.DEFAULT), load_config(pair.DEFAULT_BASELINE)
    assert pair.is_default_pair(method, baseline)
    # its name, seed, folder and tracking do not change what is trained; its budget does
    renamed = load_config(pair.DEFAULT, ["run.name=x", "run.output_dir=/tmp/x", "tracking.wandb=false"])
    assert pair.is_default_pair(renamed, baseline)
    assert not pair.is_default_pair(load_config(pair.DEFAULT, ["train.max_steps=30"]), baseline)
    assert not pair.is_default_pair(method, method)


def _run(folder: Path, golden: str, ppl: float) -> Path:
    (folder / "eval").mkdir(parents=True)
    shutil.copy(GOLDEN / golden, folder / "eval" / "quick.json")
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 60, "val/ppl": ppl}) + "\n")
    return folder


def test_a_run_is_shown_beside_the_five_seeds_mean_and_range(tmp_path):
    method = _run(tmp_path / "m", "method_quick.json", 45.0)
    baseline = _run(tmp_path / "b", "plain_kd_quick.json", 44.0)
    seeds = tmp_path / "seeds.json"
    metric = {"seeds": [0.3, 0.5, 0.4], "mean": 0.4, "ci": [0.2, 0.6]}
    seeds.write_text(
        json.dumps(
            {
                "variants": {
                    v: {"metrics": {"r_bls_unseen": metric}} for v in ("plain_kd", "cda_mean_lr025_census")
                }
            }
        )
    )
    text = pair.against_seeds(method, baseline, "quick", seeds=str(seeds))
    r_method = json.loads((GOLDEN / "method_quick.json").read_text())["tasks"]["winogender"]["result"][
        "unseen"
    ]["r_bls"]
    row = next(line for line in text.splitlines() if line.startswith("| association r"))
    assert f"| {r_method:.3g} (five seeds: 0.4 [0.3, 0.5]) |" in row
    assert "| perplexity" in text and "45 (five seeds: n/a [n/a])" in text
    assert pair.against_seeds(method, baseline, "quick", seeds=str(tmp_path / "none.json")) == ""


def test_the_shipped_seed_file_has_every_number_the_run_is_read_against():
    grid = json.loads((ROOT / pair.SEEDS).read_text())
    for variant, _ in pair.PAIR:
        metrics = grid["variants"][variant]["metrics"]
        assert all(len(metrics[key]["seeds"]) == 5 for key, _ in pair.ROWS), variant


def test_a_signal_to_the_waiting_command_reaches_the_training(tmp_path):
    """SIGTERM to `distill run` while a training runs: the training gets it (and exits as it would, 143 after its
    checkpoint), and `distill run` ends with that status instead of dying and leaving the training behind."""
    import os
    import signal
    import subprocess
    import time

    ready, got = tmp_path / "ready", tmp_path / "got"
    training = (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(got)!r}).write_text('TERM'), sys.exit(143)))\n"
        f"pathlib.Path({str(ready)!r}).write_text('1')\n"
        "time.sleep(60)\n"
    )
    waiting = f"import sys; from distill.experiment.pair import run_child; sys.exit(run_child([sys.executable, '-c', {training!r}]))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", waiting], env=env)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert ready.exists(), "the training never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert got.read_text() == "TERM"


def test_the_default_and_its_baseline_are_what_their_five_seeds_measured():
    """The grid whose seeds `make distill` reads its run against trains, for the default's variant, the default's
    student, data, objective and twins (and plain KD for the baseline's), so the comparison is like for like."""
    from distill.core.recipe import load_config
    from distill.experiment.grid import load_grid, variant_overrides

    grid = load_grid(ROOT / "recipes/experiments/smollm2_24L_names.yaml")
    assert Path(pair.SEEDS).parent.name == Path(grid.results_dir).name
    for variant, recipe in ((pair.PAIR[1][0], pair.DEFAULT), (pair.PAIR[0][0], pair.DEFAULT_BASELINE)):
        measured = load_config(grid.base, variant_overrides(grid, variant, 0))
        shipped = load_config(recipe)
        for section in ("student", "data", "kd", "perturb"):
            assert getattr(measured, section) == getattr(shipped, section), (variant, section)
        assert measured.augment.mode == shipped.augment.mode
        if shipped.augment.mode != "off":
            assert measured.augment == shipped.augment

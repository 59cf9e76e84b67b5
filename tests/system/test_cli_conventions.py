"""What users of the usual ML command lines expect: `--version`, help on every argument, listings of the recipes and
suites, offline by default with one switch for the hub, and one command that trains a recipe and its baseline and
compares them (`distill run`, what `make distill` calls)."""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill import __version__
from distill.cli import EXIT_USER_ERROR, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _actions(parser: argparse.ArgumentParser, where: str = "distill"):
    """Every argument of the parser and of its subcommands, with the command it belongs to."""
    for action in parser._actions:
        yield where, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{where} {name}")


def test_every_argument_has_help():
    missing = [
        f"{where}: {action.dest}"
        for where, action in _actions(build_parser())
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert not missing, f"arguments without help text: {missing}"


def test_every_command_has_help_in_the_listing():
    sub = next(a for _, a in _actions(build_parser()) if isinstance(a, argparse._SubParsersAction))
    listed = {c.dest for c in sub._choices_actions if c.help}
    assert listed == set(sub.choices), set(sub.choices) - listed


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fairdistill {__version__}"


def test_recipes_lists_every_shipped_recipe_and_grid_with_what_it_is_for(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for path in glob.glob(str(ROOT / "recipes" / "*.yaml")) + glob.glob(
        str(ROOT / "recipes/experiments/*.yaml")
    ):
        assert Path(path).name in out, path
    assert "smollm2-135m_to_24L.yaml" in out and "The embedded default (`make distill`)" in out
    assert "(no leading comment)" not in out


def test_suites_lists_every_suite_with_its_description(capsys):
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    for path in glob.glob(str(ROOT / "eval" / "*.yaml")):
        assert f"\n{Path(path).stem} " in out, path
    assert "(no description)" not in out and "Rudinger et al. 2018" in out


@pytest.mark.parametrize(
    "env, argv, expected",
    [
        (None, ["recipes"], "1"),
        (None, ["--online", "recipes"], "0"),
        (None, ["recipes", "--online"], "0"),
        ("0", ["recipes"], "0"),
        ("1", ["recipes", "--online"], "0"),
    ],
)
def test_offline_by_default_with_one_switch_for_the_hub(monkeypatch, capsys, env, argv, expected):
    if env is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", env)
    assert main(argv) == 0
    assert os.environ["HF_HUB_OFFLINE"] == expected


class _Children:
    """Stands in for `pair.run_child`: records each training's command line, answers with the given exit codes."""

    def __init__(self, codes=()):
        self.argvs: list[list[str]] = []
        self.envs: list[dict] = []
        self.codes = list(codes)

    def __call__(self, argv, env=None):
        self.argvs.append(list(argv))
        self.envs.append(dict(env or {}))
        return self.codes.pop(0) if self.codes else 0


@pytest.fixture
def children(monkeypatch):
    spawned = _Children()
    compared: list[tuple] = []
    monkeypatch.setattr("distill.experiment.pair.run_child", spawned)
    monkeypatch.setattr("distill.cli._compare", lambda *a: compared.append(a) or 0)
    monkeypatch.setenv(
        "FAIRDISTILL_COMMAND", ""
    )  # recorded, so that the test leaves the environment as it was
    monkeypatch.delenv("FAIRDISTILL_COMMAND")
    spawned.compared = compared
    return spawned


def test_run_trains_the_recipe_then_its_baseline_then_compares(children):
    recipe = "recipes/smollm2-135m_to_24L.yaml"
    assert main(["run", recipe, "train.max_steps=2"]) == 0
    baseline = "recipes/smollm2-135m_to_24L_baseline.yaml"  # found beside the recipe
    py = [sys.executable, "-m", "distill.cli"]
    assert children.argvs == [
        [*py, "train", recipe, "train.max_steps=2"],
        [*py, "train", baseline, "train.max_steps=2", "eval.suite=null"],
    ]
    assert children.compared == [(recipe, baseline, ["train.max_steps=2"])]
    # the resume hint of either run repeats the command that started both; this process's environment is left alone
    assert all(
        env["FAIRDISTILL_COMMAND"].endswith(f"run {recipe} train.max_steps=2") for env in children.envs
    )
    assert "FAIRDISTILL_COMMAND" not in os.environ


def test_run_through_accelerate(children):
    argv = [
        "run",
        "recipes/debug.yaml",
        "--no-baseline",
        "--accelerate-config",
        "recipes/accelerate/cpu.yaml",
    ]
    assert main([*argv, "--cpu-threads", "2", "-v"]) == 0
    assert children.argvs == [
        [sys.executable, "-m", "distill.launch", "--config_file", "recipes/accelerate/cpu.yaml"]
        + ["--num_cpu_threads_per_process", "2", "--", "-v", "train", "recipes/debug.yaml"]
    ]
    assert children.compared == []


def test_run_takes_a_shipped_recipe_by_name_and_an_explicit_baseline(children, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: debug.yaml\nrun: {name: mine}\naugment: {mode: 'off'}\nperturb: {kind: none}\n")
    assert main(["run", "debug.yaml", "--baseline", str(mine)]) == 0
    assert [argv[-2:] for argv in children.argvs] == [["train", "debug.yaml"], [str(mine), "eval.suite=null"]]


def test_run_checks_both_recipes_before_anything_trains(children, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: debug.yaml\nkd: {alpah: 1}\n")
    assert main(["run", "recipes/debug.yaml", "--baseline", str(bad)]) == EXIT_USER_ERROR
    assert children.argvs == [] and "did you mean 'kd.alpha'" in capsys.readouterr().err


def test_run_stops_at_the_first_failed_training_with_its_exit_status(children):
    children.codes = [143]
    assert main(["run", "recipes/smollm2-135m_to_24L.yaml"]) == 143
    assert len(children.argvs) == 1 and children.compared == []


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--baseline", "recipes/debug.yaml", "--no-baseline"], "--baseline and --no-baseline"),
        (["--num-processes", "2"], "need --accelerate-config"),
    ],
)
def test_run_refuses_options_that_contradict(children, capsys, argv, fragment):
    assert main(["run", "recipes/debug.yaml", *argv]) == EXIT_USER_ERROR
    assert fragment in capsys.readouterr().err and children.argvs == []


def test_the_makefile_runs_distill_through_distill_run():
    text = (ROOT / "Makefile").read_text()
    target = text[text.index("\ndistill:") :].split("\n\n")[0]
    assert "$(RUN) $(RECIPE)" in target and "distill.cli run --accelerate-config" in text


@pytest.mark.slow
def test_run_end_to_end_on_the_debug_recipe(tmp_path):
    """Two real trainings in their own processes (the tiny random teacher), then the side-by-side report."""
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(
        "base: debug.yaml\nrun: {name: debug_baseline}\naugment: {mode: 'off'}\nperturb: {kind: none}\n"
    )
    cmd = [sys.executable, "-m", "distill", "run", "recipes/debug.yaml", "--baseline", str(baseline)]
    cmd += [
        f"run.output_dir={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "tracking.wandb=false",
    ]
    cmd += ["eval.suite=pronoun_probe", "probe.max_professions=4", 'train.mixed_precision="no"']
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled")
    env.pop("HF_HUB_OFFLINE", None)  # offline all the same: the command's default
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = tmp_path / "runs" / "debug" / "report" / "report.md"
    assert f"report: {report}" in proc.stdout and "| CDA + mean | plain KD |" in report.read_text()
    assert (tmp_path / "runs" / "debug_baseline" / "eval" / "pronoun_probe.json").is_file()

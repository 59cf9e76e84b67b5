"""A run folder's owner and identity, without training: the lock (refused while held, by this process or
another; released; a lock file left by a killed run reported and taken over) and the recipe identity (written
first, checked always, a folder that cannot show its recipe refused)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from distill.core.errors import ConfigError, FairDistillError
from distill.core.ownership import RunFolderInUse, RunLock, check_identity, lock_owner, write_identity
from distill.core.recipe import load_config, save_config
from distill.core.rundir import RunDir

ROOT = Path(__file__).resolve().parents[3]


def _cfg(tmp_path, *extra):
    return load_config("recipes/debug.yaml", [f"run.output_dir={tmp_path / 'runs'}", *extra])


def test_a_held_lock_refuses_a_second_owner_naming_the_first(tmp_path):
    run = RunDir(tmp_path / "runs" / "x")
    with RunLock(run):
        owner = json.loads(run.lock_file.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunFolderInUse) as e:
            RunLock(run).acquire()
        msg = str(e.value)
        assert (
            f"run folder {run.path} is in use by process {os.getpid()} on host {socket.gethostname()}" in msg
        )
        assert f"kill -INT {os.getpid()}" in msg and "run.name=<new name>" in msg
        assert lock_owner(run) == msg  # `distill check` reads the same, writing nothing
    assert not run.lock_file.exists() and lock_owner(run) is None
    with RunLock(run):  # released: the next owner takes it
        pass


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    run = RunDir(tmp_path / "runs" / "x")
    code = (
        "import sys, time; from distill.core.ownership import RunLock; from distill.core.rundir import RunDir; "
        f"RunLock(RunDir({str(run.path)!r})).acquire(); print('held', flush=True); time.sleep(60)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderInUse, match=f"in use by process {holder.pid} on host"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock; its file is left behind, and is reported and taken over
    assert json.loads(run.lock_file.read_text())["pid"] == holder.pid
    with RunLock(run):
        assert json.loads(run.lock_file.read_text())["pid"] == os.getpid()


def test_a_lock_file_left_by_a_killed_run_is_reported_and_taken_over(tmp_path, caplog):
    run = RunDir(tmp_path / "runs" / "x")
    run.path.mkdir(parents=True)
    run.lock_file.write_text(json.dumps({"pid": 4242, "host": "node7", "started": "2024-01-01T00:00:00"}))
    with caplog.at_level("WARNING"), RunLock(run):
        assert json.loads(run.lock_file.read_text())["pid"] == os.getpid()
    assert "names process 4242 on host node7" in caplog.text and "nobody holds its lock" in caplog.text


def test_an_unwritable_output_dir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FairDistillError, match="is not writable"):
        RunLock(RunDir(blocker / "x")).acquire()


def test_the_identity_is_written_first_and_checked_always(tmp_path):
    cfg = _cfg(tmp_path)
    run = RunDir.for_config(cfg)
    assert check_identity(run, cfg) is True  # a new folder: record it
    write_identity(run, cfg)
    assert check_identity(run, cfg) is False
    # what a resume may change is not part of it
    assert check_identity(run, _cfg(tmp_path, "train.max_steps=9", "run.resume=never")) is False
    (run.path / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"different recipe \(kd.alpha: 0.5 there, 0.9 now\)"):
        check_identity(run, _cfg(tmp_path, "kd.alpha=0.9"))


def test_a_folder_that_cannot_show_its_recipe_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    run = RunDir.for_config(cfg)
    (run.path / "final").mkdir(parents=True)
    (run.path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FairDistillError) as e:
        check_identity(run, cfg)
    msg = str(e.value)
    assert "holds files of a run (final, metrics.jsonl) but not identity.json" in msg
    assert "run.name=<new name>" in msg and f"remove {run.path}" in msg


def test_a_folder_from_before_the_identity_file_is_adopted_when_its_config_matches(tmp_path):
    cfg = _cfg(tmp_path)
    run = RunDir.for_config(cfg)
    run.path.mkdir(parents=True)
    save_config(cfg, run.config)
    assert check_identity(run, cfg) is True
    with pytest.raises(ConfigError, match="different recipe"):
        check_identity(run, _cfg(tmp_path, "kd.alpha=0.9"))


@pytest.mark.parametrize(
    "text, fragment",
    [("", "is empty"), ("kd: {alpha: [\n", "cannot be read as YAML"), ("- a\n", "holds a list")],
)
def test_an_empty_or_invalid_config_yaml_is_one_message(tmp_path, text, fragment):
    cfg = _cfg(tmp_path)
    run = RunDir.for_config(cfg)
    run.path.mkdir(parents=True)
    run.config.write_text(text)
    for attempt in (lambda: check_identity(run, cfg), run.recipe):
        with pytest.raises(FairDistillError) as e:
            attempt()
        assert f"{run.config} {fragment}" in str(e.value) and "rerun the run's training command" in str(
            e.value
        )


def test_an_unreadable_identity_is_one_message(tmp_path):
    cfg = _cfg(tmp_path)
    run = RunDir.for_config(cfg)
    run.path.mkdir(parents=True)
    run.identity.write_text("{not json")
    with pytest.raises(FairDistillError, match=r"identity.json cannot be read .*restore it from a copy"):
        check_identity(run, cfg)


def test_releasing_a_lock_never_taken_does_nothing(tmp_path):
    run = RunDir(tmp_path / "never")
    RunLock(run).release()
    assert not run.path.exists() and lock_owner(run) is None

"""`make distill` through the launcher: a bad override ends with the project's one-line message and its exit
status, not the launcher's traceback after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
# Without the variables of an outer make (`make test`), so the inner make prints as it does for a user.
_OUTER_MAKE = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")
ENV = {k: v for k, v in os.environ.items() if k not in _OUTER_MAKE}
ENV.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline")


def _lines(text: str) -> list[str]:
    return [ln for ln in text.strip().splitlines() if ln.strip()]


@pytest.mark.slow
def test_launcher_ends_with_the_projects_message_and_exit_status(tmp_path):
    cmd = [sys.executable, "-m", "distill.launch", "--config_file", "recipes/accelerate/cpu.yaml", "--"]
    cmd += ["train", "recipes/debug.yaml", "kd.alpah=1", f"run.output_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    assert _lines(proc.stderr)[-1].startswith("error: recipes/debug.yaml: unknown key 'kd.alpah'")
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_distill_with_a_typo_prints_no_traceback(tmp_path):
    stamp = VENV / ".installed"
    # -o: never rebuild the environment from here, whatever the stamp's age
    cmd = ["make", "--no-print-directory", "-o", str(stamp), "distill", f"VENV={VENV}", "COMPARE="]
    cmd += ["RECIPE=recipes/debug.yaml", f"ARGS=kd.alpah=1 run.output_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    lines = _lines(proc.stderr)
    # make's own one-line trailer (`make: *** [Makefile:N: distill] Error 2`) is the only thing after the message
    assert lines[-1].startswith("make: ***") and lines[-1].endswith("Error 2")
    assert lines[-2].startswith("error: recipes/debug.yaml: unknown key 'kd.alpah'")

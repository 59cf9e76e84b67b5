"""The GPU check's surroundings: what it needs installed (and how to get what is missing on a machine without a
network), the device and versions it reports, and the one way it runs a command (logged, with a time limit, its
whole process group ended on a timeout). Standard library only at import: this runs before anything is known to
be installed."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (module, pip requirement, what needs it)
REQUIRED = [
    ("torch", "torch", "everything"),
    ("transformers", "transformers>=4.56,<6", "the models"),
    ("accelerate", "accelerate>=1.0", "the training runs (accelerate launch)"),
    ("tokenizers", "tokenizers", "the tokenizer"),
    ("safetensors", "safetensors>=0.4", "checkpoints, the twin table and the teacher cache"),
    ("numpy", "numpy>=1.24", "the training loop"),
    ("yaml", "pyyaml>=6.0", "recipes"),
    ("tqdm", "tqdm>=4.66", "the training loop"),
    ("pytest", "pytest>=8", "the CUDA tests"),
]
OPTIONAL = [
    ("trl", "trl>=1.16,<2", "the TRL GKD peer of the step benchmark (recorded as skipped without it)"),
]
NOT_NEEDED = {"wandb": "tracking is off in every run of the check (tracking.wandb=false)"}


def fetch_hint(requirement: str) -> str:
    """How to install `requirement`, with a network or without one (the wheels fetched elsewhere and carried)."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (
        f"pip install '{requirement}'  (no network here: where there is one, `pip download '{requirement}' "
        f"--dest wheels --only-binary=:all: --python-version {py} --platform manylinux2014_{platform.machine()}`, "
        f"carry wheels/, then `pip install --no-index --find-links wheels '{requirement}'`)"
    )


def module_version(name: str) -> str | None:
    """The installed version of module `name`, or None when it does not import."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        module = importlib.import_module(name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "installed"))


def prerequisites() -> dict:
    """{"python", "versions": {module: version or None}, "missing": [...], "optional_missing": [...], "hints":
    {module: how to get it}}; a Python older than 3.10 counts as missing."""
    versions = {name: module_version(name) for name, _, _ in REQUIRED + OPTIONAL}
    missing = [name for name, _, _ in REQUIRED if versions[name] is None]
    optional = [name for name, _, _ in OPTIONAL if versions[name] is None]
    specs = {name: spec for name, spec, _ in REQUIRED + OPTIONAL}
    hints = {name: fetch_hint(specs[name]) for name in missing + optional}
    if sys.version_info < (3, 10):  # noqa: UP036 (this module imports on older ones, to say so)
        missing.insert(0, "python>=3.10")
        hints["python>=3.10"] = f"Python {platform.python_version()} is too old: use Python 3.10 or later"
    return {
        "python": platform.python_version(),
        "versions": versions,
        "missing": missing,
        "optional_missing": optional,
        "hints": hints,
        "not_needed": NOT_NEEDED,
    }


def device_info() -> dict:
    """The CUDA device the check runs on ({"name": "none", "cuda": None} without one)."""
    import torch

    if not torch.cuda.is_available():
        return {"name": "none", "cuda": None, "count": 0}
    p = torch.cuda.get_device_properties(0)
    return {
        "name": p.name,
        "cuda": torch.version.cuda,
        "count": torch.cuda.device_count(),
        "capability": f"{p.major}.{p.minor}",
        "memory_bytes": int(p.total_memory),
        "bf16": bool(torch.cuda.is_bf16_supported()),
    }


@dataclass
class Ctx:
    """One run of the check: its mode, sizes and folders."""

    mode: str
    """"gpu" (a CUDA device), "dry-run" (what can be checked without one), "forced-cpu" (--force, no CUDA)."""
    tiny: bool
    """Tiny widths (same depths and vocabulary) instead of GPT-2's."""
    out: Path
    """Where the JSON, the Markdown table and the log go."""
    work: Path
    """Runs, caches and saved teachers (removed at the end unless --keep-work)."""
    device: dict = field(default_factory=dict)
    python: str = sys.executable

    @property
    def log(self) -> Path:
        return self.out / "gpu_check.log"

    @property
    def cuda(self) -> bool:
        return self.mode == "gpu"

    def env(self, **extra: str) -> dict:
        """The environment every command of the check runs in: the checkout first on PYTHONPATH, the hub off,
        W&B off, plus `extra`."""
        path = os.environ.get("PYTHONPATH", "")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        env.update(WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", TRL_EXPERIMENTAL_SILENCE="1")
        env.update(extra)
        return env


def start(ctx: Ctx, cmd: list[str], output: Path, **env: str) -> subprocess.Popen:
    """Start `cmd` in the checkout in its own process group, stdout and stderr into `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as fh:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=ctx.env(**env), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def end_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process group `start` made for `proc` (the launcher and its children) and reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait()


def run_logged(ctx: Ctx, title: str, cmd: list[str], timeout: float, **env: str) -> tuple[int, str]:
    """Run `cmd` to its end or `timeout` seconds (then its process group is killed and the status is 124);
    (exit status, its output). The command and its output are appended to the check's log."""
    output = ctx.work / "logs" / f"{title.replace(':', '_').replace('/', '_')}.txt"
    proc = start(ctx, cmd, output, **env)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_group(proc)
        rc = 124
    text = output.read_text(errors="replace")
    with ctx.log.open("a") as fh:
        fh.write(f"\n==== {title} ({time.strftime('%H:%M:%S')}): {' '.join(cmd)}\n{text}")
        fh.write(f"==== {title}: exit status {rc}{' (timed out)' if rc == 124 else ''}\n")
    return rc, text


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])

"""Who owns a run folder and which recipe it belongs to: the lock of the one process group running in it
(`run.lock`) and the recipe's identity (`identity.json`), written before anything else and checked on every start.

    lock = RunLock(run).acquire()     # refused at once while another process holds it; released on every exit
    if check_identity(run, cfg):      # refuses another recipe, whatever else was deleted from the folder
        write_identity(run, cfg)

The lock is `fcntl.flock` on `run.lock`, which holds the owner's pid, host and start time. The kernel releases a
flock when its process ends, however it ends, so a lock file nobody holds was left by a run that was killed: it is
reported and taken over. The identity is the resolved recipe less `RESUMABLE_CHANGES` (what a resumed run may
change), with its digest; a folder that holds run files but no identity (and no config.yaml of the same recipe, as
folders from before the identity file have) cannot be shown to be this run's and is refused.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import yaml

from distill.core.config import Config
from distill.core.errors import ConfigError, FairDistillError
from distill.core.files import atomic_write, digest
from distill.core.recipe import config_from_dict, config_to_yaml
from distill.core.rundir import RunDir

log = logging.getLogger("distill")

# Settings a resumed run may change: its label and resume policy, how long, how often to log/evaluate/save, how the loss, the student's
# attention and the teacher's targets are computed (same values to rounding), where W&B goes. Everything else is
# the run's identity.
RESUMABLE_CHANGES = {
    "run": ("label", "resume"),
    "train": (
        "max_steps",
        "max_tokens",
        "log_every",
        "eval_every",
        "probe_every",
        "save_every",
        "keep_last",
        "attention",
    ),
    "eval": ("suite",),
    "kd": ("chunk_size", "fused"),
    "data": ("num_workers", "cache_dir"),
    "teacher": ("cache", "cache_format", "cache_top_k"),
    "tracking": None,
}


# --------------------------------------------------------------------------------------------------------------
# The lock


class RunFolderInUse(FairDistillError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive lock on `<run>/run.lock` while a run (or an evaluation writing into the folder) lives."""

    def __init__(self, run: RunDir):
        self.run, self.fd = run, None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def acquire(self) -> RunLock:
        """Take the lock or raise `RunFolderInUse` naming its owner; creates the folder. A lock file left by a
        killed run is named in a warning and taken over."""
        path = self.run.lock_file
        try:
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.fd, locked = _open_locked(path)
        except RunFolderInUse:
            raise
        except OSError as e:
            raise FairDistillError(
                f"run directory {self.run.path} is not writable ({e.strerror}); set run.output_dir to a writable folder"
            ) from None
        if not locked:
            log.warning(
                "run folder %s: this filesystem does not support file locks, so a second run in the same folder "
                "would not be refused; give concurrent runs their own run.name",
                self.run.path,
            )
        left = _owner(os.pread(self.fd, 4096, 0))
        if left is not None:
            log.warning(
                "run folder %s: %s names %s, but nobody holds its lock: that run ended without releasing it "
                "(killed, or its machine went down); taking the folder over",
                self.run.path,
                path.name,
                _describe(left),
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(me) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it) and let go; nothing when the lock was never taken."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if _same_file(fd, self.run.lock_file):
                os.unlink(self.run.lock_file)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the flock


def _open_locked(path: Path) -> tuple[int, bool]:
    """An open descriptor of `path` holding its exclusive flock, and whether the filesystem locked it. The file
    that is locked must still be the one at `path` (a releasing owner unlinks it): otherwise open it again."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(os.pread(fd, 4096, 0))
            os.close(fd)
            raise RunFolderInUse(_in_use_message(path, owner)) from None
        except OSError:  # ENOLCK, ENOSYS, EINVAL: a filesystem without flock (some NFS and Lustre mounts)
            return fd, False
        if _same_file(fd, path):
            return fd, True
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _owner(raw: bytes) -> dict | None:
    try:
        owner = json.loads(raw.decode("utf-8", errors="replace") or "null")
    except ValueError:
        return {"unreadable": raw[:80].decode("utf-8", errors="replace")} if raw.strip() else None
    return owner if isinstance(owner, dict) else None


def _describe(owner: dict | None) -> str:
    if not owner or "pid" not in owner:
        return "another process (its lock file is still being written, or unreadable)"
    return f"process {owner['pid']} on host {owner.get('host', '?')}, started {owner.get('started', '?')}"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _in_use_message(path: Path, owner: dict | None) -> str:
    stop = ""
    if owner and "pid" in owner:
        where = "" if owner.get("host") == socket.gethostname() else f" on {owner.get('host')}"
        stop = f" (or stop it: kill -INT {owner['pid']}{where})"
    return (
        f"run folder {path.parent} is in use by {_describe(owner)}, which holds {path.name}; two runs in one folder "
        f"would interleave their checkpoints, metrics and W&B run. Wait for that run to end{stop}, or give this run "
        "its own folder with run.name=<new name>"
    )


def lock_owner(run: RunDir) -> str | None:
    """Who holds the run folder's lock now (read-only: nothing is created or written), or None."""
    import fcntl

    try:
        fd = os.open(run.lock_file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _in_use_message(run.lock_file, _owner(os.pread(fd, 4096, 0)))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


# --------------------------------------------------------------------------------------------------------------
# The recipe's identity


def recipe_of(data: Config | dict) -> dict:
    """The resolved recipe as plain data, less `RESUMABLE_CHANGES`."""
    d = yaml.safe_load(config_to_yaml(data)) if isinstance(data, Config) else data
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for section, keys in RESUMABLE_CHANGES.items():
        if keys is None:
            d.pop(section, None)
        elif isinstance(d.get(section), dict):
            for k in keys:
                d[section].pop(k, None)
    return d


def _with_defaults(saved: dict) -> dict:
    """A recorded recipe with today's defaults for keys it predates (so an upgrade can resume); as it was when it
    no longer loads."""
    try:
        return recipe_of(config_from_dict(saved))
    except (ConfigError, AttributeError, TypeError):
        return recipe_of(saved)


def check_identity(run: RunDir, cfg: Config) -> bool:
    """Refuse `cfg` in a folder that belongs to another recipe, or to a recipe it cannot show. True when the
    folder has no identity yet and `write_identity` should record this one (a new folder, or one from before the
    identity file whose config.yaml is this recipe)."""
    now = recipe_of(cfg)
    if run.identity.is_file():
        before = _with_defaults(_read_identity(run))
        if before != now:
            raise _different(run, before, now)
        return False
    present = _run_files(run)
    if not present:
        return True
    if run.config.is_file():  # a folder from before identity.json: its config.yaml is the recipe it ran
        before = _with_defaults(run.saved_recipe())
        if before != now:
            raise _different(run, before, now)
        return True
    raise FairDistillError(
        f"run folder {run.path} holds files of a run ({', '.join(present[:6])}"
        f"{', ...' if len(present) > 6 else ''}) but not {run.identity.name}, the record of its recipe, so it cannot "
        "be shown to be this recipe's run (it may be another run's, with files deleted); start this run in its own "
        f"folder with run.name=<new name>, or remove {run.path} to start it over there"
    )


def write_identity(run: RunDir, cfg: Config) -> None:
    recipe = recipe_of(cfg)
    text = json.dumps({"digest": digest(recipe), "recipe": recipe}, indent=1, sort_keys=True)
    atomic_write(run.identity, text + "\n")


def _read_identity(run: RunDir) -> dict:
    try:
        data = json.loads(run.identity.read_text(encoding="utf-8"))
        recipe = data["recipe"]
        if not isinstance(recipe, dict):
            raise ValueError(f"'recipe' is a {type(recipe).__name__}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FairDistillError(
            f"{run.identity} cannot be read ({type(e).__name__}: {e}); it records the recipe this run folder "
            f"belongs to, and without it the folder cannot be resumed safely: restore it from a copy, start this run "
            f"in its own folder with run.name=<new name>, or remove {run.path} to start it over"
        ) from None
    return recipe


def _run_files(run: RunDir) -> list[str]:
    """What the folder holds besides its lock (and a half-written identity a killed run left)."""
    if not run.path.is_dir():
        return []
    skip = (run.lock_file.name, RunDir.WRITE_PROBE)
    names = sorted(p.name for p in run.path.iterdir())
    return [n for n in names if n not in skip and not n.startswith(f"{run.identity.name}.tmp")]


def _different(run: RunDir, before: dict, now: dict) -> ConfigError:
    return ConfigError(
        f"run directory {run.path} was started with a different recipe ({recipe_differences(before, now)}); "
        "resume it with the same recipe, or start a new run with run.name=<new name>"
    )


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_differences(saved: dict, now: dict) -> str:
    """`kd.alpha: 0.5 there, 0.9 now; ...` (five at most, then how many more)."""
    a, b = _flat(saved), _flat(now)
    diffs = [
        f"{k}: {a.get(k)!r} there, {b.get(k)!r} now"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    more = f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""
    return "; ".join(diffs[:5]) + more

"""A run folder (`<run.output_dir>/<run.name>/`): what lives where, its checkpoints and the recipe it was started with.

    run.lock                 held (flock) by the process group running in the folder: its pid, host and start
    identity.json            the recipe the folder belongs to, written first (`distill.core.ownership`)
    config.yaml              the resolved recipe, rewritten by every start
    metrics.jsonl            one line per logged step (`distill.core.tracking.MetricsLog`)
    val_blocks.safetensors   the held-out blocks, which evaluation measures perplexity on; its metadata holds the
                             fingerprint of the tokenizer they were made with, which evaluation checks
    prune.json, probe.json   the layer ranking (pruned students) and the final per-profession probe
    checkpoints/step_N/      accelerator state, trainer_state.json, loop_rng_<rank>.pt, `complete` marker last
    checkpoints/latest       the newest checkpoint's name
    final/                   the student (save_pretrained), its tokenizer and model card
    wandb/run_id             the W&B run every launch and evaluation of this folder continues

Nothing else spells these names: code that reads or writes a run folder goes through `RunDir`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

from distill.core.config import Config
from distill.core.errors import ConfigError, FairDistillError
from distill.core.files import atomic_write
from distill.core.recipe import config_from_dict

log = logging.getLogger("distill")

CHECKPOINT_PREFIX = "step_"
WANDB_DIR = "wandb"
WANDB_ID_FILE = "run_id"

TOKENIZER_KEY = "tokenizer_fingerprint"
"""The metadata key of val_blocks.safetensors naming the tokenizer the run trained with (`files.tokenizer_fingerprint`)."""

EVAL_DIR = "eval"
TEACHER_DIR = "teacher"
FINAL_DIR = "final"


class RunDir:
    """The paths of one run folder and what is done to them as a whole (checkpoints, the final export)."""

    WRITE_PROBE = ".write_test"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_file = self.path / "run.lock"
        self.identity = self.path / "identity.json"
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.val_blocks = self.path / "val_blocks.safetensors"
        self.prune = self.path / "prune.json"
        self.probe = self.path / "probe.json"
        self.final = self.path / FINAL_DIR
        self.eval = self.path / EVAL_DIR
        """The student's evaluation results; the teacher's are in `teacher_eval`."""
        self.teacher_eval = self.eval / TEACHER_DIR
        self.figures = self.eval / "figures"
        self.report = self.path / "report"
        self.checkpoints_dir = self.path / "checkpoints"
        self.wandb_dir = self.path / WANDB_DIR
        self.wandb_id = self.wandb_dir / WANDB_ID_FILE

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def for_config(cls, cfg: Config) -> RunDir:
        """`run.output_dir / run.name`, refused when the name escapes the output folder."""
        root = Path(cfg.run.output_dir).expanduser().resolve()
        path = (root / cfg.run.name).resolve()
        if root not in path.parents:
            raise ConfigError(f"run.name {cfg.run.name!r} escapes run.output_dir {str(root)!r}")
        return cls(path)

    def finished(self) -> bool:
        """final/ holds a whole model (it is renamed into place only when complete)."""
        return (self.final / "config.json").is_file()

    # ---- checkpoints -----------------------------------------------------------------------------------------

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"

    @staticmethod
    def step_of(ckpt: Path) -> int:
        return int(ckpt.name[len(CHECKPOINT_PREFIX) :])

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (those holding the `complete` marker), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        done = [
            p
            for p in self.checkpoints_dir.iterdir()
            if p.name.startswith(CHECKPOINT_PREFIX)
            and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
            and (p / "complete").is_file()
        ]
        return sorted(done, key=self.step_of)

    def latest(self) -> Path | None:
        done = self.checkpoints()
        return done[-1] if done else None

    def resumable(self, main: bool = True) -> Path | None:
        """The newest whole checkpoint. Newer damaged ones are named in a warning and, by the main process, moved
        aside to `checkpoints/damaged_step_N` (kept for inspection, out of rotation and never resumed from)."""
        for ckpt in reversed(self.checkpoints()):
            problem = checkpoint_problem(ckpt)
            if problem is None:
                return ckpt
            aside = ckpt.with_name(f"damaged_{ckpt.name}")
            n = 1
            while aside.exists():
                aside, n = ckpt.with_name(f"damaged_{ckpt.name}.{n}"), n + 1
            if main:
                os.replace(ckpt, aside)
                log.warning(
                    "checkpoint %s is damaged (%s); moved to %s, resuming from an older one",
                    ckpt,
                    problem,
                    aside,
                )
        return None

    def save_checkpoint(self, accelerator, step: int, state: dict, rng: dict, keep_last: int) -> Path:
        """accelerator.save_state into a temporary folder every process writes, renamed into place by the main
        process and marked complete last; the marker records every file's size so a later resume can tell a
        damaged checkpoint from a whole one. A full disk removes the partial folder and stops with one message;
        the checkpoints already written stay as they were. (Not `atomic_write`: all processes write the folder.)"""
        import torch

        final = self.checkpoint(step)
        tmp = self.checkpoints_dir / f".tmp_{final.name}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(tmp), safe_serialization=True)
            torch.save(rng, tmp / f"loop_rng_{accelerator.process_index}.pt")
            # Fault-injection hook for the kill tests: hold the half-written checkpoint open for a moment.
            pause = float(os.environ.get("FAIRDISTILL_PAUSE_IN_CHECKPOINT", "0") or 0)
            if pause > 0:
                time.sleep(pause)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                (tmp / "trainer_state.json").write_text(json.dumps(state))
                files = {
                    str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()
                }
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
                (final / "complete").write_text(json.dumps({"step": step, "files": files}))
                (self.checkpoints_dir / "latest").write_text(final.name)
        except KeyboardInterrupt:  # stopped at once (a second signal): nothing half-written stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            if not (final / "complete").is_file():
                shutil.rmtree(final, ignore_errors=True)
            raise
        except Exception as e:
            if not disk_full(e):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            if not (final / "complete").is_file():
                shutil.rmtree(final, ignore_errors=True)
            raise self.disk_full_error(f"checkpoint {final.name}") from None
        if accelerator.is_main_process:
            for old in self.checkpoints()[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load_checkpoint(accelerator, ckpt: Path) -> tuple[dict, dict]:
        """Restore the accelerator state of `ckpt`; returns (trainer_state.json, this process's loop RNG states)."""
        import torch

        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        rng = torch.load(ckpt / f"loop_rng_{accelerator.process_index}.pt", weights_only=True)
        return state, rng

    # ---- the folder as a whole -------------------------------------------------------------------------------

    def open(self, cfg: Config) -> Path | None:
        """The checkpoint to resume from, or None to start at step 0, once the folder is known to be this recipe's
        (`distill.core.ownership`). Damaged newer checkpoints are skipped with a warning. A finished run with no
        checkpoint left is refused: training again from step 0 would replace its final/."""
        if not self.checkpoints():
            if self.finished():
                raise FairDistillError(
                    f"run directory {self.path} is finished (final/ holds its student) but has no checkpoint to "
                    "resume from (checkpoints/ was removed), so a rerun would train it again from step 0 over "
                    f"final/; evaluate it as it is (distill eval {self.path}), start a new run with "
                    f"run.name=<new name>, or remove {self.final} to train this one again"
                )
            return None
        if cfg.run.resume == "never":
            raise ConfigError(
                f"run directory {self.path} already holds checkpoints and run.resume is 'never'; "
                f"pick another run.name or delete the folder"
            )
        ckpt = self.resumable(main=int(os.environ.get("RANK", "0")) == 0)
        if ckpt is None:  # starting over would drop the run's metrics.jsonl: leave that to the user
            raise FairDistillError(
                f"every checkpoint in {self.checkpoints_dir} is damaged (kept as damaged_step_N); start a new run "
                "with run.name=<new name>, or delete the folder to start this one over"
            )
        return ckpt

    def tokenizer_fingerprint(self) -> str | None:
        """The fingerprint of the tokenizer the run trained with, as recorded with its validation blocks; None for
        a run from before it was recorded."""
        from safetensors import safe_open

        if not self.val_blocks.is_file():
            return None
        try:
            with safe_open(str(self.val_blocks), framework="pt") as f:
                return (f.metadata() or {}).get(TOKENIZER_KEY)
        except Exception:  # a damaged file: evaluation's perplexity names it when it reads the blocks
            return None

    def saved_recipe(self) -> dict:
        """config.yaml as plain data; a missing, empty or unreadable one is one message with the way to restore
        it."""
        import yaml

        fix = (
            "it records the recipe this run was started with: rerun the run's training command (it writes the file "
            "again once identity.json shows the recipe is the same), or restore it from a copy"
        )
        try:
            data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FairDistillError(f"{self.config} is missing; {fix}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FairDistillError(f"{self.config} cannot be read as YAML ({first}); {fix}") from None
        if data is None:
            raise FairDistillError(f"{self.config} is empty; {fix}")
        if not isinstance(data, dict):
            raise FairDistillError(
                f"{self.config} holds a {type(data).__name__}, not the recipe's sections; {fix}"
            )
        return data

    def recipe(self) -> Config:
        """The recipe the run was started with (config.yaml), today's defaults filled in for keys it predates."""
        return config_from_dict(self.saved_recipe(), str(self.config))

    def bytes_used(self) -> int:
        """What the checkpoints and final/ hold (the part of a run's peak already on disk)."""
        return _bytes_under(self.checkpoints_dir, self.final)

    def check_writable(self, need: dict | None = None) -> None:
        """The folder can be written, and (with `need`, from `peak_disk_bytes`) its filesystem has room for the
        run's peak less what its checkpoints and final/ already hold."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / self.WRITE_PROBE
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise FairDistillError(
                f"run directory {self.path} is not writable ({e.strerror}); set run.output_dir to a writable folder"
            ) from None
        if need is None:
            return
        free = shutil.disk_usage(self.path).free
        missing = need["peak"] - self.bytes_used()
        if free < missing:
            mib = 2**20
            raise FairDistillError(
                f"only {free / mib:.0f} MiB free under {self.path}; this run needs about {missing / mib:.0f} MiB "
                f"more at its peak ({need['keep']} kept checkpoint(s) and one being written, "
                f"{need['checkpoint'] / mib:.0f} MiB each, plus final/ of {need['final'] / mib:.0f} MiB). Free some "
                "space, lower train.keep_last, or set run.output_dir elsewhere"
            )

    def write_final(self, write) -> Path:
        """Fill final/ through `write(folder)` atomically; a full disk removes the partial copy and stops with
        one message."""
        try:
            return atomic_write(self.final, write, folder=True)
        except Exception as e:
            if not disk_full(e):
                raise
            raise self.disk_full_error("final/") from None

    def disk_full_error(self, what: str) -> FairDistillError:
        last = self.latest()
        kept = f"the last good checkpoint {last.name} is intact" if last else "no checkpoint was written yet"
        return FairDistillError(
            f"no space left under {self.path} while writing {what}; the partial copy was removed and {kept}. Free "
            "some space (or lower train.keep_last) and rerun the same command to resume"
        )


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (header unreadable, or tensors reaching past its end), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n > size - 8:
                return f"{path.name}: {size} bytes, too short for its header"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"{path.name}: unreadable header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{path.name}: {size} bytes, its header describes {8 + n + end}"
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a complete-marked checkpoint cannot be resumed from (a file missing, truncated or of another size than
    when it was saved; a safetensors header unreadable), or None when it is whole."""
    try:
        marker = json.loads((ckpt / "complete").read_text())
    except (OSError, ValueError):
        marker = None
    files = marker.get("files", {}) if isinstance(marker, dict) else {}  # older checkpoints: step number only
    for name, size in files.items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name}: {f.stat().st_size} bytes, {size} when saved"
    for f in sorted(ckpt.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            return problem
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json unreadable ({type(e).__name__})"
    return None


def disk_full(e: BaseException) -> bool:
    """ENOSPC, raised as OSError by Python and torch, or inside safetensors' own error text."""
    text = str(e)
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left" in text or "StorageFull" in text


def peak_disk_bytes(
    n_params: int, keep_last: int, total_steps: int | None, save_every: int
) -> dict[str, int]:
    """What a run writes at its peak, in bytes: `keep` complete checkpoints while one more is being written, plus
    `final/`. A checkpoint holds the float32 weights and AdamW's two moments (12 bytes a parameter); `final/` the
    weights and the tokenizer. The small files (logs, W&B, probe tables) get a fixed allowance."""
    checkpoint = 12 * n_params + 2**20
    final = 4 * n_params + 8 * 2**20
    saves = keep_last + 1
    if total_steps is not None:
        saves = -(-total_steps // save_every) if save_every else 1
    keep = min(keep_last, max(saves - 1, 0))
    return {
        "checkpoint": checkpoint,
        "final": final,
        "keep": keep,
        "peak": (keep + 1) * checkpoint + final + 16 * 2**20,
    }


def _bytes_under(*folders: Path) -> int:
    return sum(f.stat().st_size for d in folders if d.is_dir() for f in d.rglob("*") if f.is_file())

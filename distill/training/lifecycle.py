"""A run's lifecycle: the Accelerator it runs in, its trackers and the signals that stop it, all entered into one
`contextlib.ExitStack` by `train()`, so that however the run ends (finished, stopped by a signal, a bad recipe, a
full disk, a bug) the signal handlers are restored and the trackers and process group are closed, once."""

from __future__ import annotations

import datetime
import os
import signal
from contextlib import ExitStack

import torch

from distill.core.config import Config
from distill.core.errors import FairDistillError
from distill.core.ownership import RunLock, check_identity, write_identity
from distill.core.recipe import SEED_MAX
from distill.core.rundir import RunDir
from distill.core.tracking import finish_trackers, redact, wandb_init_kwargs, wandb_mode, wandb_run_id


class TrainingStopped(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was saved. `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGTERM/SIGINT: raised at once from wherever the run was (a KeyboardInterrupt, so no `except
    Exception` holds it up); what was being written is removed, never left to pass for whole."""

    def __init__(self, signum: int, message: str | None = None):
        self.signum, self.exit_code = signum, 128 + int(signum)
        super().__init__(message or f"stopped at once by a second {signal.Signals(signum).name}")


class StopSignals:
    """Record SIGTERM/SIGINT (cluster preemption, Ctrl-C) instead of dying mid-step: the loop checks between
    micro-batches and at each step's end. A second signal raises `StoppedAtOnce` there and then."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.received is not None:
            raise StoppedAtOnce(signum)
        self.received = signum

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def agreed(self, accelerator) -> int | None:
        """The signal any process received (every process must stop at the same step: a signal may reach them
        at different times), or None. With several processes it is a collective: all call it at the same point."""
        if accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor(float(self.received is not None), device=accelerator.device)
        flag = accelerator.reduce(flag, reduction="sum")
        return (self.received or signal.SIGTERM) if float(flag) > 0 else None


class Tracking:
    """Closes the trackers and the process group when the run's stack unwinds; `keep_wandb` (set once the run
    finished) leaves the W&B run open for the evaluation that follows in this process."""

    def __init__(self, accelerator):
        self.accelerator, self.keep_wandb = accelerator, False

    def close(self) -> None:
        finish_trackers(self.accelerator, keep_wandb=self.keep_wandb)


def make_accelerator(cfg: Config, run: RunDir, mixed_precision: str, stack: ExitStack):
    """The run's Accelerator, closed by `stack`; refuses a launch Accelerate did not join and DeepSpeed with
    gradient accumulation."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    # Several processes and no CUDA device (torchrun, or `accelerate launch` on a CPU machine): ask for the CPU, so
    # Accelerate joins them with gloo instead of leaving each to train alone into the same run directory.
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with="wandb" if uses_wandb(cfg) else None,
        project_dir=str(run.path),
        cpu=launched > 1 and not torch.cuda.is_available(),
        # The loop steps the LR schedule once per optimizer step. Left on, Accelerate would step it num_processes
        # times per call (it assumes each process's batch shrank), ending the schedule early on several processes.
        step_scheduler_with_optimizer=False,
        # The other processes wait in a barrier while the main one builds the data cache (tokenizing millions of
        # documents the first time) or writes a large checkpoint: far longer than NCCL's 10-minute default.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(hours=2))],
    )
    tracking = Tracking(accelerator)
    stack.callback(tracking.close)
    check_seed(cfg.run.seed, accelerator.num_processes)
    if launched > 1 and accelerator.num_processes != launched:
        raise FairDistillError(
            f"{launched} processes were launched (WORLD_SIZE) but Accelerate joined {accelerator.num_processes}; "
            "check the accelerate config's distributed_type, or set ACCELERATE_USE_CPU=true to run them on CPUs"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed steps its optimizer inside every backward unless told where accumulation ends, and this loop
        # accumulates by itself; no DataLoader goes through `prepare`, so it is also told the micro-batch.
        if cfg.train.grad_accum != 1:
            raise FairDistillError(
                f"train.grad_accum={cfg.train.grad_accum} under DeepSpeed: fairdistill accumulates only under DDP and "
                "FSDP; set train.grad_accum=1 and raise train.micro_batch_size (or the process count), or use FSDP"
            )
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            cfg.train.micro_batch_size
        )
    return accelerator, tracking


def claim_run_folder(cfg: Config, run: RunDir, lock: RunLock, accelerator) -> None:
    """Before anything is written to the folder: the main process takes its lock (`lock`, released by the run's
    stack) and checks the recipe's identity, recording it in a new folder. The other processes of the launch share
    the folder and leave the lock alone; when the main process is refused, every process raises its message."""
    error: FairDistillError | None = None
    if accelerator.is_main_process:
        try:
            lock.acquire()
            if check_identity(run, cfg):
                write_identity(run, cfg)
        except FairDistillError as e:
            error = e
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [str(error) if error is not None else None]
        broadcast_object_list(box, from_process=0)
        if box[0] is not None and error is None:
            error = FairDistillError(box[0])
    if error is not None:
        raise error


def check_seed(seed: int, world: int) -> None:
    """Every process seeds numpy with run.seed + its rank (`set_seed(device_specific=True)`): the largest of them
    must still be a numpy seed."""
    if seed + world - 1 > SEED_MAX:
        raise FairDistillError(
            f"run.seed={seed} with {world} processes: each process seeds numpy with run.seed + its rank, past "
            f"numpy's largest seed {SEED_MAX}; use run.seed <= {SEED_MAX - world + 1}"
        )


def uses_wandb(cfg: Config) -> bool:
    return cfg.tracking.wandb and wandb_mode(cfg.tracking.mode) != "disabled"


def start_trackers(cfg: Config, run: RunDir, accelerator, state: dict) -> None:
    """One W&B run per run directory, whatever the launches and resumes (an older run's id, kept in `state`, is
    adopted)."""
    if not uses_wandb(cfg):
        return
    if accelerator.is_main_process:
        state["wandb_id"] = wandb_run_id(run.path, adopt=state["wandb_id"])
    os.environ.setdefault("WANDB_MODE", wandb_mode(cfg.tracking.mode))
    accelerator.init_trackers(
        cfg.tracking.project,
        config=redact(cfg.to_dict()),
        init_kwargs={
            "wandb": wandb_init_kwargs(run.path, cfg.run.name, cfg.tracking.tags, state["wandb_id"])
        },
    )

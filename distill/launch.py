"""`python -m distill.launch [accelerate launch options] -- train RECIPE [key=value ...]`: how `distill run` (`make distill`) starts each training.

The same as `accelerate launch [options] -m distill.cli train ...`, except for how a failure ends: the launcher
re-raises a failed child as its own `CalledProcessError` (or torch's `ChildFailedError`), so a typo in an override
would end with a launcher traceback printed after the project's one-line message. Here the child's message stays
the last thing printed and its exit status (2 for bad input, 143 for SIGTERM) is this process's.
"""

from __future__ import annotations

import logging
import subprocess
import sys

USAGE = "usage: python -m distill.launch [accelerate launch options] -- <distill command> [args ...]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.stderr.write(USAGE + "\n")
        return 2
    split = argv.index("--")
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args([*argv[:split], "-m", "distill.cli", *argv[split + 1 :]])
    # torch.distributed's agent logs a table for every failed process; each process already said why it stopped.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch_command(args)
    except subprocess.CalledProcessError as e:
        return e.returncode
    except Exception as e:
        failures = getattr(e, "failures", None)  # torch.distributed.elastic's ChildFailedError
        if not failures:
            raise
        codes = [f.exitcode for f in failures.values()]
        return next((c for c in codes if c > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

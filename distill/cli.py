"""Command line: `distill train RECIPE [key=value ...]`, `distill check RECIPE`, `distill eval ...`.

Every `FairDistillError` (bad recipe, word list, dataset, checkpoint) is printed as one message with a non-zero
exit; a traceback means a bug in fairdistill.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from distill.core.errors import ConfigError, FairDistillError

EXIT_USER_ERROR = 2


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, so `main()` called in-process (tests, notebooks
    that swap the stream) never keeps a reference to a stream that has since been closed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    level = logging.INFO if (rank == 0 or verbose) else logging.WARNING
    # The project's own loggers speak at INFO; every library only at WARNING, so their progress chatter (fontTools
    # subsetting each PDF figure's fonts, httpx, filelock, ...) stays out of the log.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[_CurrentStderr()],
        force=True,
    )
    logging.getLogger("distill").setLevel(level)


def _cmd_train(args) -> int:
    from distill.core.recipe import load_config
    from distill.training.loop import train

    cfg = load_config(args.recipe, args.overrides)
    cfg.invocation = invocation(args.argv)
    run_dir = train(cfg, keep_tracking=bool(cfg.eval.suite))
    if cfg.eval.suite:
        from distill.reporting.evaluate import evaluate_run, evaluated_since_training

        done = evaluated_since_training(run_dir, cfg.eval.suite)  # a rerun of a finished run: nothing new
        sys.stdout.write((done.read_text() if done else evaluate_run(run_dir, cfg.eval.suite)) + "\n")
    return 0


def _cmd_check(args) -> int:
    from distill.core.recipe import config_to_yaml, load_config
    from distill.training.preflight import preflight

    cfg = load_config(args.recipe, args.overrides)
    preflight(cfg)  # everything train checks before it loads a model
    sys.stdout.write(config_to_yaml(cfg))
    return 0


def _cmd_inspect_twins(args) -> int:
    from distill.core.recipe import load_config
    from distill.counterfactual.inspect import inspect_twins

    sys.stdout.write(inspect_twins(load_config(args.recipe, args.overrides), args.show) + "\n")
    return 0


def _cmd_eval(args) -> int:
    from distill.reporting.evaluate import evaluate_checkpoint
    from distill.reporting.tables import suite_table

    result = evaluate_checkpoint(args.ckpt, args.suite, out_dir=args.out, overrides=args.overrides)
    sys.stdout.write(suite_table([(result["model"]["label"], result)]) + "\n")
    return 0


def _cmd_compare(args) -> int:
    """Evaluate the baseline run's student with the main recipe's suite (once), put the teacher and both students
    side by side in each run's model card, and report both runs side by side."""
    from pathlib import Path

    from distill.core.recipe import load_config
    from distill.core.rundir import RunDir
    from distill.evaluation import results as R
    from distill.reporting.evaluate import cards_side_by_side, evaluate_checkpoint
    from distill.reporting.report import write_report

    main_cfg = load_config(args.recipe, args.overrides)
    base_cfg = load_config(args.baseline, args.overrides)
    main_dir = Path(main_cfg.run.output_dir) / main_cfg.run.name
    base_dir = Path(base_cfg.run.output_dir) / base_cfg.run.name
    suite = main_cfg.eval.suite
    if suite and not R.student_results(base_dir, suite).is_file():
        evaluate_checkpoint(base_dir, suite)
    if suite:  # each model card: the teacher, the other method and its own student
        cards_side_by_side([main_dir, base_dir], suite)
    path = write_report([str(main_dir), str(base_dir)], out=str(RunDir(main_dir).report))
    sys.stdout.write(Path(path).read_text() + f"\nreport: {path}\n")
    return 0


def _cmd_experiment(args) -> int:
    from distill.experiment.grid import load_grid
    from distill.experiment.runs import run_grid
    from distill.experiment.summary import summarise

    grid = load_grid(args.grid)
    if args.seeds:
        try:
            grid.seeds = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise ConfigError(
                [f"--seeds {args.seeds!r} is not a comma-separated list of seeds; give e.g. --seeds 0,1,2"]
            ) from None
    if args.output_dir:
        grid.output_dir = args.output_dir
    if args.results_dir:
        grid.results_dir = args.results_dir
    out = summarise(grid) if args.summarise_only else run_grid(grid)
    if args.archive:
        from distill.experiment.grid import archive_runs

        kept = archive_runs(grid, Path(args.archive))
        logging.getLogger("distill").info(
            "experiment: archived %d runs (scores, configs, metrics; no weights) in %s",
            len(kept),
            args.archive,
        )
    # table.md: the probe and generation table; seeds.md: every metric's seed-level verdicts (a grid on the
    # winogender suite writes only the second)
    shown = [out / n for n in ("table.md", "seeds.md") if (out / n).is_file()]
    sys.stdout.write("".join(p.read_text() + "\n" for p in shown) + f"results: {out}\n")
    if args.check_against:
        from distill.experiment.reproduction import check_reproduction

        text, ok = check_reproduction(args.check_against, out / "results.json")
        (out / "reproduction.md").write_text(text)
        sys.stdout.write(text)
        return 0 if ok else 1
    return 0


def _cmd_report(args) -> int:
    from distill.reporting.report import write_report

    # Beside the runs, not in the working directory (a checkout's root): the first run's output root.
    out = args.out or str(Path(args.runs[0]).expanduser().resolve().parent / "report")
    path = write_report(args.runs, out=out)
    sys.stdout.write(f"{path}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distill", description="Distill a causal LM while removing gender disparity."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log from every process")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run a distillation recipe")
    t.add_argument("recipe", help="recipe YAML, e.g. recipes/debug.yaml")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. kd.alpha=0.7 perturb.kind=max")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser(
        "check",
        help="validate a recipe as train does before loading a model (data, word lists, layer indices from the "
        "teacher's config.json) and print the resolved config",
    )
    c.add_argument("recipe")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=_cmd_check)

    w = sub.add_parser(
        "inspect-twins", help="coverage, her-rule accuracy and coherence of a recipe's counterfactual twins"
    )
    w.add_argument("recipe")
    w.add_argument("--show", type=int, default=3, help="how many real twins to print")
    w.add_argument("overrides", nargs="*")
    w.set_defaults(func=_cmd_inspect_twins)

    e = sub.add_parser(
        "eval", help="evaluate a checkpoint (a run directory, its final/ folder, or a model dir)"
    )
    e.add_argument("ckpt")
    e.add_argument("--suite", default="quick")
    e.add_argument("--out", default=None, help="folder for <suite>.json (default: <run dir>/eval)")
    e.add_argument("overrides", nargs="*")
    e.set_defaults(func=_cmd_eval)

    m = sub.add_parser(
        "compare", help="evaluate a baseline run like the main run and report the two side by side"
    )
    m.add_argument("recipe", help="the main recipe (its eval.suite is used)")
    m.add_argument("baseline", help="the baseline recipe")
    m.add_argument("overrides", nargs="*")
    m.set_defaults(func=_cmd_compare)

    x = sub.add_parser("experiment", help="train and evaluate a grid of variants x seeds; write results/")
    x.add_argument("grid", help="e.g. recipes/experiments/smollm2_24L_seeds.yaml")
    x.add_argument("--summarise-only", action="store_true", help="only rebuild results/ from finished runs")
    x.add_argument(
        "--output-dir", help="train into this folder instead of the grid's output_dir (a second run)"
    )
    x.add_argument("--results-dir", help="write the table here instead of the grid's results_dir")
    x.add_argument("--seeds", help="only these seeds, e.g. 0,1,2 (summarise the seeds finished so far)")
    x.add_argument(
        "--archive",
        metavar="DIR",
        help="copy every evaluated run's scores, config and metrics (no weights) to DIR/<run>/",
    )
    x.add_argument(
        "--check-against",
        metavar="RESULTS_JSON",
        help="compare this run's table with an earlier results.json (is every number inside its interval?); "
        "writes reproduction.md and exits 1 if one is not",
    )
    x.set_defaults(func=_cmd_experiment)

    r = sub.add_parser("report", help="side-by-side report of evaluated runs")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", default=None, help="report folder (default: report/ beside the first run)")
    r.set_defaults(func=_cmd_report)
    return p


def invocation(argv: list[str]) -> str:
    """The command line as the user typed it, for the resume hint: `make distill` exports its own
    (FAIRDISTILL_COMMAND); otherwise the `distill` script or `python -m distill.cli` with these arguments."""
    if os.environ.get("FAIRDISTILL_COMMAND"):
        return os.environ["FAIRDISTILL_COMMAND"]
    prog = Path(sys.argv[0]).name
    head = ["distill"] if prog == "distill" else ["python", "-m", "distill.cli"]
    return shlex.join(head + list(argv))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse with options and `key=value` overrides in any order (`eval CKPT --suite X a=1` as `eval CKPT a=1
    --suite X`): argparse stops filling a `*` positional at the first option, so what it leaves over and looks
    like an override is appended, in order."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except FairDistillError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USER_ERROR
    except Exception as e:
        from distill.training.lifecycle import TrainingStopped

        if isinstance(e, TrainingStopped):
            sys.stderr.write(f"{e}\n")
            return e.exit_code
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())

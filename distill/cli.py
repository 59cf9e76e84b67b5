"""Command line: `distill run RECIPE` (train it and its baseline, compare them), `train`, `check`, `eval`, ...

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

from distill import __version__
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
    from distill.training.preflight import preflight, step_budget_line

    cfg = load_config(args.recipe, args.overrides)
    preflight(cfg, standalone=True)  # everything train checks before it loads a model
    logging.getLogger("distill").info("%s", step_budget_line(cfg))
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


def _cmd_erase(args) -> int:
    from distill.training.erase import erase_run

    overrides = list(args.overrides)
    if not any(o.startswith("student.erase.rank=") for o in overrides):
        overrides.insert(0, "student.erase.rank=1")
    out = erase_run(args.run, args.out, overrides)
    sys.stdout.write(f"{out}\n")
    return 0


def _cmd_compare(args) -> int:
    """Evaluate the baseline run's student with the main recipe's suite (once), put the teacher and both students
    side by side in each run's model card, and report both runs side by side."""
    return _compare(args.recipe, args.baseline, args.overrides)


def _compare(recipe: str, baseline: str, overrides: list[str]) -> int:
    from distill.core.recipe import load_config
    from distill.core.rundir import RunDir
    from distill.evaluation import results as R
    from distill.reporting.evaluate import cards_side_by_side, evaluate_checkpoint
    from distill.reporting.report import write_report

    main_cfg = load_config(recipe, overrides)
    base_cfg = load_config(baseline, overrides)
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


def _cmd_run(args) -> int:
    """Train the recipe, then its baseline (evaluated once, by the comparison), then report the two side by side.
    Each training runs in its own process, as `make distill` always has; both recipes are checked first, so a
    typo in either fails before anything trains."""
    from distill.core.recipe import load_config
    from distill.experiment import pair

    if args.baseline and args.no_baseline:
        raise ConfigError("--baseline and --no-baseline both given; keep one")
    if (args.num_processes or args.cpu_threads) and not args.accelerate_config:
        raise ConfigError("--num-processes and --cpu-threads need --accelerate-config (how to launch them)")
    baseline = None if args.no_baseline else (args.baseline or pair.default_baseline(args.recipe))
    cfgs = [load_config(r, args.overrides) for r in [args.recipe, *([baseline] if baseline else [])]]
    launch = None
    if args.accelerate_config:
        launch = ["--config_file", args.accelerate_config]
        launch += ["--num_processes", str(args.num_processes)] if args.num_processes else []
        launch += ["--num_cpu_threads_per_process", str(args.cpu_threads)] if args.cpu_threads else []
    env = dict(os.environ)
    env.setdefault("FAIRDISTILL_COMMAND", invocation(args.argv))  # the resume hint repeats this command
    for recipe, extra in [(args.recipe, []), *([(baseline, ["eval.suite=null"])] if baseline else [])]:
        argv = pair.train_argv(recipe, [*args.overrides, *extra], launch, args.verbose)
        if code := pair.run_child(argv, env):
            return code  # the child said why; its exit status is this one's
    if not baseline:
        logging.getLogger("distill").info("run: no baseline for %s; trained it alone", args.recipe)
        return 0
    _compare(args.recipe, baseline, args.overrides)
    if cfgs[0].eval.suite and pair.is_default_pair(*cfgs):  # where this run falls against the five seeds
        dirs = [Path(c.run.output_dir) / c.run.name for c in cfgs]
        sys.stdout.write(pair.against_seeds(dirs[0], dirs[1], cfgs[0].eval.suite))
    return 0


def _cmd_recipes(args) -> int:
    from distill.core import catalog

    sys.stdout.write(
        "Recipes (distill train|run RECIPE):\n"
        + catalog.listing(catalog.recipes())
        + "\nExperiment grids (distill experiment recipes/experiments/GRID):\n"
        + catalog.listing(catalog.recipes("recipes/experiments"))
    )
    return 0


def _cmd_suites(args) -> int:
    from distill.core import catalog

    sys.stdout.write(
        "Evaluation suites (distill eval CKPT --suite NAME):\n" + catalog.listing(catalog.suites())
    )
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


def _common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """The options every command takes, before or after its name (`distill --online check R`, `distill check R
    --online`); a subcommand's copy never overwrites what the top level parsed."""
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="store_true", help="log from every process", **default)
    parser.add_argument(
        "--online",
        action="store_true",
        help="allow the Hugging Face hub (default: offline, HF_HUB_OFFLINE=1, unless the environment sets "
        "HF_HUB_OFFLINE; needed the first time a hub teacher or dataset is used)",
        **default,
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="confirm that the Python code of a teacher whose recipe file sets teacher.trust_remote_code: true may "
        "run on this machine (read it first)",
        **default,
    )


def _sub(sub, name: str, func, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    _common(parser)
    parser.set_defaults(func=func)
    return parser


RECIPE_HELP = "recipe YAML: a path, or a shipped recipe's file name (`distill recipes` lists them)"
OVERRIDES_HELP = "key=value overrides of the recipe, e.g. kd.alpha=0.7 perturb.kind=max (any order)"


def _add_run(sub) -> None:
    r = _sub(
        sub, "run", _cmd_run, "train a recipe and its baseline, then compare them (what `make distill` runs)"
    )
    r.add_argument("recipe", help=RECIPE_HELP)
    r.add_argument(
        "--baseline",
        metavar="RECIPE",
        help="the baseline recipe (default: <recipe>_baseline.yaml beside the recipe, when there is one)",
    )
    r.add_argument(
        "--no-baseline", action="store_true", help="train the recipe alone, no baseline or comparison"
    )
    r.add_argument(
        "--accelerate-config",
        metavar="FILE",
        help="train through `accelerate launch` with this config (e.g. recipes/accelerate/ddp_8gpu.yaml); "
        "default: one process",
    )
    r.add_argument("--num-processes", type=int, metavar="N", help="processes for --accelerate-config")
    r.add_argument(
        "--cpu-threads", type=int, metavar="N", help="threads per process on CPU (with --accelerate-config)"
    )
    r.add_argument("overrides", nargs="*", help=OVERRIDES_HELP + "; applied to both recipes")


def _add_experiment(sub) -> None:
    x = _sub(
        sub, "experiment", _cmd_experiment, "train and evaluate a grid of variants x seeds; write results/"
    )
    x.add_argument("grid", help="grid YAML, e.g. recipes/experiments/smollm2_24L_seeds.yaml")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distill",
        description="Distill a causal LM into a smaller student with counterfactual role reversal, a method meant "
        "to reduce the gender bias the student inherits, and measure whether it did.",
    )
    p.add_argument("--version", action="version", version=f"fairdistill {__version__}")
    _common(p, top=True)
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="`distill COMMAND --help` for its arguments"
    )

    _add_run(sub)

    t = _sub(sub, "train", _cmd_train, "train one recipe (and evaluate it with its eval.suite)")
    t.add_argument("recipe", help=RECIPE_HELP)
    t.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    c = _sub(
        sub,
        "check",
        _cmd_check,
        "validate a recipe as train does before loading a model (data, word lists, layer indices from the "
        "teacher's config.json) and print the resolved config",
    )
    c.add_argument("recipe", help=RECIPE_HELP)
    c.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    _sub(
        sub,
        "recipes",
        _cmd_recipes,
        "list the shipped recipes and experiment grids, each with what it is for",
    )
    _sub(sub, "suites", _cmd_suites, "list the evaluation suites (eval/*.yaml), each with what it measures")

    w = _sub(
        sub,
        "inspect-twins",
        _cmd_inspect_twins,
        "coverage, her-rule accuracy and coherence of a recipe's twins",
    )
    w.add_argument("recipe", help=RECIPE_HELP)
    w.add_argument("--show", type=int, default=3, help="how many real twins to print")
    w.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    e = _sub(sub, "eval", _cmd_eval, "evaluate a checkpoint with a suite")
    e.add_argument(
        "ckpt",
        help="a run directory, its final/ folder, a save_pretrained folder, a hub id or embedded:smollm2-135m",
    )
    e.add_argument(
        "--suite",
        default="quick",
        help="suite name or YAML path (default: quick; `distill suites` lists them)",
    )
    e.add_argument("--out", default=None, help="folder for <suite>.json (default: <run dir>/eval)")
    e.add_argument(
        "overrides", nargs="*", help="key=value overrides of the suite, e.g. n_per_prompt=1 (any order)"
    )

    m = _sub(
        sub,
        "compare",
        _cmd_compare,
        "evaluate a baseline run like the main run and report the two side by side",
    )
    m.add_argument("recipe", help="the main recipe (its eval.suite is used)")
    m.add_argument("baseline", help="the baseline recipe")
    m.add_argument("overrides", nargs="*", help=OVERRIDES_HELP + "; applied to both recipes")

    er = _sub(
        sub,
        "erase",
        _cmd_erase,
        "a new run whose student is RUN's with the gender lean erased in closed form (student.erase), fitted on "
        "RUN's transfer set; RUN is only read",
    )
    er.add_argument("run", help="a trained run folder, e.g. runs/smollm2-135m_to_24L")
    er.add_argument("--out", required=True, help="the new run folder (must not exist, or be empty)")
    er.add_argument(
        "overrides", nargs="*", help="student.erase.* settings, e.g. student.erase.rank=1 (default rank: 1)"
    )

    _add_experiment(sub)

    rp = _sub(sub, "report", _cmd_report, "side-by-side report of evaluated runs")
    rp.add_argument("runs", nargs="+", help="run directories, e.g. runs/smollm2-135m_to_24L")
    rp.add_argument("--out", default=None, help="report folder (default: report/ beside the first run)")
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
    # Offline by default, as `make` is: a hub name that is not in the local cache fails at once with a hint
    # instead of retrying the network. --online (or HF_HUB_OFFLINE=0 in the environment) allows the hub; set
    # before any Hugging Face library is imported, and inherited by the processes a command starts.
    if args.online:
        os.environ["HF_HUB_OFFLINE"] = "0"
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from distill.models.remote_code import CONFIRM_ENV

    before = os.environ.get(CONFIRM_ENV)
    if args.trust_remote_code:  # the confirmation, for this command (and the trainings it starts) only
        os.environ[CONFIRM_ENV] = "1"
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
    except KeyboardInterrupt as e:  # Ctrl-C before training's handlers, or a second signal during training
        sys.stderr.write(f"{e or 'interrupted'}\n")
        return getattr(e, "exit_code", 130)
    finally:
        if before is None:
            os.environ.pop(CONFIRM_ENV, None)
        else:
            os.environ[CONFIRM_ENV] = before


if __name__ == "__main__":
    sys.exit(main())

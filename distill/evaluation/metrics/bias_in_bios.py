"""`bias_in_bios`: a linear probe for occupation on frozen features; per-occupation TPR gap and its RMS
(`evaluation/downstream/bias_in_bios.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.evaluation.downstream.bias_in_bios import BIOS_HUB_ID
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, check_range, from_hub, register


@dataclass
class BiasInBiosTask:
    """Bias-in-Bios: linear probe for occupation on frozen features; per-occupation TPR gap and its RMS."""

    metric: str = "bias_in_bios"
    """The metric kind (see `registry.kinds()`)."""
    train_path: str | None = None
    """Local training biographies (.jsonl, .json or .parquet with hard_text, profession, gender); null loads
    `dataset` split `train_split` from the hub."""
    test_path: str | None = None
    """Local test biographies; null loads `dataset` split `test_split` from the hub."""
    dataset: str = BIOS_HUB_ID
    """Hub dataset used when a path is null."""
    train_split: str = "train"
    """Hub split the probe is trained on."""
    test_split: str = "test"
    """Hub split the TPR gap is measured on."""
    max_train: int | None = 5000
    """Seeded subset of the training biographies (null: all; the full split is 250k)."""
    max_test: int | None = 2000
    """Seeded subset of the test biographies (null: all)."""
    max_length: int = 128
    """Tokens of each biography fed to the model."""
    batch_size: int = 32
    """Biographies per forward pass."""
    l2: float = 1e-3
    """L2 penalty of the logistic-regression probe."""
    seed: int = 0
    """Seeds the subsets and the probe."""


def check(where: str, task: BiasInBiosTask, problems: list[str]) -> None:
    check_range(problems, f"{where}.l2", task.l2, 0)


def prepare(name: str, task: BiasInBiosTask) -> dict:
    from distill.evaluation.downstream.bias_in_bios import load_bias_in_bios

    out = {}
    for part, path, split, limit in (
        ("train", task.train_path, task.train_split, task.max_train),
        ("test", task.test_path, task.test_split, task.max_test),
    ):

        def load(path=path, split=split, limit=limit) -> dict:
            return load_bias_in_bios(path or task.dataset, split, limit, task.seed)

        out[part] = load() if path else from_hub(name, task, f"{part}_path", load)
    return out


def run(name: str, task: BiasInBiosTask, data: dict, lm: LoadedModel, ctx: Context):
    from distill.evaluation.downstream.bias_in_bios import bias_in_bios_eval

    result = bias_in_bios_eval(
        lm.model,
        lm.tokenizer,
        data["train"],
        data["test"],
        batch_size=task.batch_size,
        device=ctx.device,
        max_length=task.max_length,
        seed=task.seed,
        l2=task.l2,
    )
    return result, []


def headline(result: dict) -> dict:
    return {"tpr_gap_rms": result.get("rms"), "accuracy": result.get("accuracy"), "n": result.get("n_test")}


KIND: Any = register(
    MetricKind(
        name="bias_in_bios",
        settings=BiasInBiosTask,
        prepare=prepare,
        run=run,
        headline=headline,
        rows=(
            Row("tpr_gap_rms", "Bias-in-Bios TPR gap (female - male), RMS over occupations", "0"),
            Row("accuracy", "Bias-in-Bios occupation probe accuracy", "higher"),
        ),
        hidden=("n",),
        files=("train_path", "test_path"),
        check=check,
        local_hint="a .jsonl / .parquet export with fields hard_text, profession, gender",
    )
)

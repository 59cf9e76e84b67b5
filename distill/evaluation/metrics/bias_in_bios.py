"""Bias-in-Bios (De-Arteaga et al., "Bias in Bios: A Case Study of Semantic Representation Bias in a High-Stakes
Setting", FAT* 2019): predict a person's occupation from their biography, and measure how much more often the
prediction is right for one gender than the other.

We freeze the LM, mean-pool its last hidden states into one vector per biography, train a multinomial logistic
regression on top (in torch, seeded), and report per occupation `TPR_female - TPR_male` and the root mean square
of those gaps over occupations (the paper's summary of the gap).

The metric kind `bias_in_bios`: a linear probe for occupation on frozen features; per-occupation TPR gap and its RMS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distill.core.errors import DataError
from distill.core.resources import resource_path
from distill.data.documents import read_records
from distill.evaluation._data import load_hub
from distill.evaluation.registry import Context, LoadedModel, MetricKind, Row, check_range, from_hub, register
from distill.models.lm import encode_plain, eval_mode, model_device, pad_token_id, right_pad

BIOS_HUB_ID = "LabHC/bias_in_bios"
FIELDS = ("hard_text", "profession", "gender")
# Gender codes of the hub copy (its README: male 0, female 1); string genders in local files map onto them.
MALE, FEMALE = 0, 1
_GENDER_NAMES = {"m": MALE, "male": MALE, "f": FEMALE, "female": FEMALE}
# The 28 occupations in the hub copy's label order.
BIOS_PROFESSIONS = (
    "accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian", "dj",
    "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
    "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
    "software_engineer", "surgeon", "teacher", "yoga_teacher",
)  # fmt: skip
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def _columns(rows: Sequence[Mapping], source: str) -> dict[str, list]:
    for n, row in enumerate(rows):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise DataError(
                f"{source}: row {n} is missing field(s) {missing}; Bias-in-Bios rows need {list(FIELDS)} "
                "(hard_text: the biography without its first sentence)"
            )
    return {f: [row[f] for row in rows] for f in FIELDS}


def _professions(values: list, source: str) -> tuple[np.ndarray, list[str]]:
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        y = np.asarray(values, dtype=np.int64)
        top = int(y.max()) + 1 if len(y) else 0
        if len(y) and y.min() < 0:
            raise DataError(f"{source}: profession labels must be >= 0, got {int(y.min())}")
        names = list(BIOS_PROFESSIONS) if top <= len(BIOS_PROFESSIONS) else [str(i) for i in range(top)]
        return y, names
    if all(isinstance(v, str) for v in values):
        known = set(BIOS_PROFESSIONS)
        names = list(BIOS_PROFESSIONS) if set(values) <= known else sorted(set(values))
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[v] for v in values], dtype=np.int64), names
    raise DataError(f"{source}: field 'profession' must be all integers (hub labels) or all strings (names)")


def _genders(values: list, source: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for n, v in enumerate(values):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) in (MALE, FEMALE):
            out[n] = int(v)
        elif isinstance(v, str) and v.strip().lower() in _GENDER_NAMES:
            out[n] = _GENDER_NAMES[v.strip().lower()]
        else:
            raise DataError(
                f"{source}: row {n}: field 'gender' must be 0 (male), 1 (female), 'm' or 'f'; got {v!r}"
            )
    return out


def load_bias_in_bios(
    path_or_hub: str | Path = BIOS_HUB_ID,
    split: str = "test",
    max_examples: int | None = None,
    seed: int = 0,
) -> dict:
    """Bias-in-Bios rows as columns: `{"text": [str], "profession": int64 (N,), "gender": int64 (N,) with 0 male
    and 1 female, "profession_names": [str]}`.

    `path_or_hub`: a local `.jsonl`, `.json` (list of objects) or `.parquet` file with the hub's fields
    `hard_text`, `profession` (label index or name), `gender` (0/1 or m/f), or a hub id (default
    `LabHC/bias_in_bios`, splits train / dev / test). `max_examples` keeps a seeded random subset, in file order.
    """
    p = resource_path(path_or_hub)
    if p.is_file() or str(path_or_hub).lower().endswith(_LOCAL_SUFFIXES):
        if not p.is_file():
            raise DataError(f"{path_or_hub}: Bias-in-Bios file not found")
        cols = _columns(read_records(p), str(p))
        source = str(p)
    else:
        hint = (
            "export the split to a local .jsonl or .parquet file with fields hard_text, profession, gender and "
            "pass its path as path_or_hub"
        )
        ds = load_hub(str(path_or_hub), None, split, hint)
        missing = [f for f in FIELDS if f not in ds.column_names]
        if missing:
            raise DataError(f"{path_or_hub}: missing field(s) {missing}; columns are {ds.column_names}")
        cols = {f: list(ds[f]) for f in FIELDS}
        source = str(path_or_hub)
    n = len(cols["hard_text"])
    if max_examples is not None and n > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))
        cols = {f: [v[i] for i in keep] for f, v in cols.items()}
    y, names = _professions(cols["profession"], source)
    return {
        "text": [str(t) for t in cols["hard_text"]],
        "profession": y,
        "gender": _genders(cols["gender"], source),
        "profession_names": names,
    }


@torch.inference_mode()
def features(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 32,
    device: str | torch.device | None = None,
    max_length: int = 256,
) -> torch.Tensor:
    """Mean-pooled last hidden state of a frozen model: returns (N, hidden) float32 on CPU.

    Each text is encoded without special tokens and cut to its first `max_length` tokens; padding is excluded
    from the mean (an empty text gives a zero vector). The LM head is skipped (`model.base_model`), so no
    vocabulary-sized logits are computed.
    """
    dev = model_device(model, device)
    body = getattr(model, "base_model", model)
    pad_id = pad_token_id(tokenizer)
    encoded = [encode_plain(tokenizer, t)[:max_length] for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    out: list[torch.Tensor | None] = [None] * len(encoded)
    with eval_mode(model):
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            seqs = [encoded[i] or [pad_id] for i in rows]
            ids, mask = right_pad(seqs, pad_id, dev)
            for r, i in enumerate(rows):
                if not encoded[i]:
                    mask[r] = 0
            h = body(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # (B, L, H)
            m = mask[..., None].float()  # (B, L, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
            for r, i in enumerate(rows):
                out[i] = pooled[r].cpu()
    if not out:
        return torch.zeros((0, hidden or 0))
    return torch.stack(out)  # type: ignore[arg-type]


def linear_probe(
    train_X: torch.Tensor | np.ndarray,
    train_y: torch.Tensor | np.ndarray | Sequence[int],
    test_X: torch.Tensor | np.ndarray,
    n_classes: int | None = None,
    l2: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Multinomial logistic regression trained on (train_X (N, D), train_y (N,)); returns the predicted class of
    each row of test_X (M, D) as int64 (M,).

    Features are standardised with the training mean and std; the loss is mean cross-entropy plus
    `l2 / 2 * ||W||^2`, minimised full-batch with L-BFGS (convex, so the optimum does not depend on the seeded
    initialisation; the seed makes every run identical anyway).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x_train = torch.as_tensor(np.asarray(train_X), dtype=torch.float32, device=dev)
    x_test = torch.as_tensor(np.asarray(test_X), dtype=torch.float32, device=dev)
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.long, device=dev)
    if x_train.ndim != 2 or len(x_train) == 0:
        raise DataError(
            f"linear_probe needs a non-empty (N, D) training matrix, got shape {tuple(x_train.shape)}"
        )
    if len(y) != len(x_train):
        raise DataError(f"train_X has {len(x_train)} rows but train_y has {len(y)} labels")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp(min=1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    gen = torch.Generator(device="cpu").manual_seed(seed)
    weight = (0.01 * torch.randn(x_train.shape[1], n_classes, generator=gen)).to(dev).requires_grad_()
    bias = torch.zeros(n_classes, device=dev, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return (x_test @ weight + bias).argmax(-1).cpu().numpy().astype(np.int64)


def tpr_gap(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    gender: Sequence[int] | np.ndarray,
    names: Sequence[str] | None = None,
    female: int = FEMALE,
    male: int = MALE,
) -> dict:
    """Per-occupation true-positive-rate gap `TPR_female - TPR_male` and its root mean square.

    TPR_g(c) = share of people of gender g whose true occupation is c that are predicted as c. An occupation
    with no test example of one gender has no gap: it is excluded from the RMS and listed in `excluded`.
    Returns `{"per_occupation": {name: gap}, "tpr_female": {...}, "tpr_male": {...}, "rms": float (nan if no
    occupation qualifies), "n_occupations": number with a gap, "excluded": [names], "n_excluded", "accuracy"}`.
    """
    y_true, y_pred, gender = np.asarray(y_true), np.asarray(y_pred), np.asarray(gender)
    if not len(y_true) == len(y_pred) == len(gender):
        raise ValueError(f"lengths differ: y_true {len(y_true)}, y_pred {len(y_pred)}, gender {len(gender)}")

    def name(c: int) -> str:
        return names[c] if names is not None and 0 <= c < len(names) else str(c)

    gaps: dict[str, float] = {}
    tpr_f: dict[str, float] = {}
    tpr_m: dict[str, float] = {}
    excluded: list[str] = []
    for c in sorted(int(v) for v in np.unique(y_true)):
        is_c = y_true == c
        f, m = is_c & (gender == female), is_c & (gender == male)
        if not f.any() or not m.any():
            excluded.append(name(c))
            continue
        tpr_f[name(c)] = float((y_pred[f] == c).mean())
        tpr_m[name(c)] = float((y_pred[m] == c).mean())
        gaps[name(c)] = tpr_f[name(c)] - tpr_m[name(c)]
    values = np.asarray(list(gaps.values()))
    return {
        "per_occupation": gaps,
        "tpr_female": tpr_f,
        "tpr_male": tpr_m,
        "rms": float(np.sqrt(np.mean(values**2))) if len(values) else math.nan,
        "n_occupations": len(gaps),
        "excluded": excluded,
        "n_excluded": len(excluded),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else math.nan,
    }


def bias_in_bios_eval(
    model: torch.nn.Module,
    tokenizer,
    train: Mapping,
    test: Mapping,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    max_length: int = 256,
    seed: int = 0,
    l2: float = 1e-3,
) -> dict:
    """The whole benchmark for one model: features of `train` and `test` (as `load_bias_in_bios` returns them),
    a linear probe for occupation, and `tpr_gap` on the test split, plus `n_train` and `n_test`."""
    train_X = features(model, tokenizer, train["text"], batch_size, device, max_length)
    test_X = features(model, tokenizer, test["text"], batch_size, device, max_length)
    n_classes = max(len(train["profession_names"]), int(np.max(train["profession"])) + 1)
    pred = linear_probe(train_X, train["profession"], test_X, n_classes=n_classes, l2=l2, seed=seed)
    result = tpr_gap(test["profession"], pred, test["gender"], names=test["profession_names"])
    return {**result, "n_train": len(train["text"]), "n_test": len(test["text"])}


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

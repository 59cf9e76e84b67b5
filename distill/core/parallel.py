"""Ordered parallel map over worker processes, for the data pipeline (tokenizing, building twins).

`ordered_map(fn, items, workers, state)` yields `fn(state, item)` for each item in order. With workers <= 1 it runs
in this process. Otherwise forked workers inherit `state` (a tokenizer, a counterfactual builder: nothing is
pickled but the items and results) and at most 2 x workers items are in flight, so a streamed dataset is never
read ahead into memory. Results are the same whatever the worker count.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_STATE: dict[int, Any] = {}


def _init_worker() -> None:
    # A forked child must not enter an OpenMP parallel region of the parent's thread pool (it hangs); one thread
    # per worker, as torch's DataLoader workers do.
    import torch

    torch.set_num_threads(1)


def _call(key: int, fn: Callable, item: Any) -> Any:
    return fn(_STATE[key], item)


def ordered_map(
    fn: Callable[[Any, Any], Any], items: Iterable[Any], workers: int, state: Any
) -> Iterator[Any]:
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        for item in items:
            yield fn(state, item)
        return
    key = id(state)
    _STATE[key] = state  # inherited by the forked workers
    try:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("fork"), initializer=_init_worker
        ) as pool:
            pending: deque = deque()
            for item in items:
                pending.append(pool.submit(_call, key, fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        _STATE.pop(key, None)

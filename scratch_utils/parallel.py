"""One parallel map with a progress bar, for the steps that work photo by photo
(``synthetic.generate``, ``prepare``)."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def parallel_map(function: Callable, tasks: Iterable, workers: int | None = None,
                 desc: str = "", unit: str = "it", progress: bool = True,
                 min_tasks: int = 16, chunksize: int = 8) -> Iterator:
    """``map(function, tasks)`` in order, on ``workers`` processes (default: every core) when
    there are at least ``min_tasks`` of them (a pool costs a second to start), with a tqdm bar.
    ``function`` must be picklable (a module-level function)."""
    from tqdm.auto import tqdm

    tasks = list(tasks)
    workers = max(1, workers or os.cpu_count() or 1)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(tasks) >= min_tasks else None
    results = pool.map(function, tasks, chunksize=chunksize) if pool else map(function, tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    try:
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)

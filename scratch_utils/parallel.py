"""One parallel map with a progress bar, for the steps that work photo by photo
(``synthetic.generate``, ``prepare``): tqdm's ``process_map`` when the work is worth a pool."""
from __future__ import annotations

import os
from typing import Callable, Iterable


def parallel_map(function: Callable, tasks: Iterable, workers: int | None = None, desc: str = "",
                 unit: str = "it", progress: bool = True, min_tasks: int = 16, chunksize: int = 8) -> list:
    """``[function(task) for task in tasks]``, in order, on ``workers`` processes (default: every
    core) when there are at least ``min_tasks`` of them (a pool costs a second to start), with a
    progress bar. ``function`` must be picklable (a module-level function)."""
    from tqdm.auto import tqdm
    from tqdm.contrib.concurrent import process_map

    tasks = list(tasks)
    workers = max(1, workers or os.cpu_count() or 1)
    bar = {"desc": desc, "unit": unit, "disable": not progress}
    if workers > 1 and len(tasks) >= min_tasks:
        return process_map(function, tasks, max_workers=workers, chunksize=chunksize, **bar)
    with tqdm(tasks, **bar) as tasks:
        return [function(task) for task in tasks]

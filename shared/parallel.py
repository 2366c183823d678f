"""Independent CPU jobs (one model per seed and arm) in parallel worker processes.

On a small CPU, several single-threaded processes beat one process with several intra-op threads for the
tiny models these papers train: torch's threads spend their time synchronising, and under contention they
spin-wait (measured here: several times slower per step). :func:`run_jobs` therefore runs each job in a
``spawn``-ed worker pinned to one thread. Every job must seed itself, so results do not depend on
``workers`` or on the completion order; results come back in job order.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from typing import Any, Callable, Sequence


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _call(fn: Callable, args: tuple) -> Any:
    return fn(*args)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int = 1,
             cost: Sequence[float] | None = None,
             on_done: Callable[[int, Any, int], None] | None = None) -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed ``workers`` at a time in single-threaded processes.

    ``fn`` must be a module-level (picklable) function. ``cost`` (larger = slower) orders the submission so
    the longest jobs start first and the last worker does not finish alone. ``on_done(index, result,
    n_done)`` is called in the parent as each job finishes (for progress lines). With ``workers <= 1`` the
    jobs run in this process, in order.
    """
    results: list[Any] = [None] * len(jobs)
    if workers <= 1:
        for i, job in enumerate(jobs):
            results[i] = fn(*job)
            if on_done:
                on_done(i, results[i], i + 1)
        return results
    order = sorted(range(len(jobs)), key=lambda i: -cost[i]) if cost is not None else list(range(len(jobs)))
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_single_thread) as ex:
        futures = {ex.submit(_call, fn, jobs[i]): i for i in order}
        for done, fut in enumerate(cf.as_completed(futures), 1):
            i = futures[fut]
            results[i] = fut.result()
            if on_done:
                on_done(i, results[i], done)
    return results

"""shared.parallel.run_jobs: same results in job order whatever the number of workers."""

import os

from shared.parallel import run_jobs


def _work(x: int, y: int) -> tuple[int, int, int]:
    import torch

    return x * y, torch.get_num_threads(), os.getpid()


def test_results_in_job_order_and_independent_of_workers():
    jobs = [(i, i + 1) for i in range(6)]
    seen = []
    serial = run_jobs(_work, jobs, workers=1, on_done=lambda i, r, n: seen.append((i, n)))
    assert [r[0] for r in serial] == [i * (i + 1) for i in range(6)]
    assert seen == [(i, i + 1) for i in range(6)]
    done = []
    parallel = run_jobs(_work, jobs, workers=2, cost=[1, 5, 2, 4, 3, 0], on_done=lambda i, r, n: done.append(n))
    assert [r[0] for r in parallel] == [r[0] for r in serial]
    assert all(r[1] == 1 for r in parallel)  # each worker runs torch on one thread
    assert {r[2] for r in parallel} != {os.getpid()} and sorted(done) == list(range(1, 7))

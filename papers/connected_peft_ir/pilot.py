"""Pilot (run once, before the claims were registered): the learning-rate grid on the VALIDATION subjects.

Every trained arm gets the same number of candidate learning rates, the same steps, batches and seed
(100, not an evaluation seed); the rate with the highest validation MRR@10 is the arm's `lr_<arm>` in
params.yaml. The test subjects are never touched here. Writes ``pilot_lr_grid.csv`` beside this file
(committed, with the wall time per run) so the sizing in the README can be checked.

Round 1 ran the first three points of every arm's grid (and the zero-shot encoders at 3 and 6 layers);
every arm's best rate was its largest, so round 2 (``--round 2``) added one larger point to EVERY arm's
grid and appended it to the table; full fine-tuning and the connected adapters still peaked at their
largest rate, so round 3 added one more larger point to every arm (5 points each).

    flock /tmp/small_run.lock python -m papers.connected_peft_ir.pilot [--round 2|3]
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

GRID = {"full": [3e-5, 1e-4, 3e-4], "lora": [3e-4, 1e-3, 3e-3], "adapter": [3e-4, 1e-3, 3e-3],
        "connected": [3e-4, 1e-3, 3e-3]}
EXTRA_ROUNDS = {2: {"full": [1e-3], "lora": [1e-2], "adapter": [1e-2], "connected": [1e-2]},
                3: {"full": [3e-3], "lora": [3e-2], "adapter": [3e-2], "connected": [3e-2]}}
PILOT_SEED = 100


def _timed(arm, seed, lr, train, val, cfg):
    from papers.connected_peft_ir.method import run_arm

    t0 = time.perf_counter()
    r = run_arm(arm, seed, lr, train, val, cfg)
    r["wall_s"] = time.perf_counter() - t0
    r["n_layers"] = cfg["n_layers"]
    r["final_loss"] = r["curve"][-1]["loss"] if r["curve"] else float("nan")
    r.pop("curve")
    return r


def main(steps: int = 80, batch_size: int = 8, n_val: int = 100, n_test: int = 150, split_seed: int = 0,
         workers: int = 2, round_: int = 1) -> pd.DataFrame:
    from papers.connected_peft_ir.data import load_subjects, split_subjects
    from shared.parallel import run_jobs

    train, val, _test = split_subjects(load_subjects(), n_val, n_test, split_seed)
    cfg = dict(n_layers=3, steps=steps, batch_size=batch_size, temperature=0.05, warmup_frac=0.1,
               adapter_size=16, lora_r=16, lora_alpha=32, max_length=32, log_every=10, device="cpu")
    if round_ > 1:
        jobs = [(arm, PILOT_SEED, lr, train, val, cfg) for arm, lrs in EXTRA_ROUNDS[round_].items() for lr in lrs]
    else:
        jobs = [("zero_shot", PILOT_SEED, 0.0, train, val, cfg),
                ("zero_shot", PILOT_SEED, 0.0, train, val, dict(cfg, n_layers=6))]  # headroom of the full MiniLM
        jobs += [(arm, PILOT_SEED, lr, train, val, cfg) for arm, lrs in GRID.items() for lr in lrs]
    t0 = time.perf_counter()
    rows = run_jobs(_timed, jobs, workers=workers,
                    on_done=lambda i, r, n: print(f"[{n}/{len(jobs)}] {r['arm']} lr={r['lr']:g} "
                                                  f"val MRR@10={r['mrr10']:.4f} {r['wall_s']:.0f}s", flush=True))
    table = pd.DataFrame(rows)
    table["steps"], table["batch_size"], table["split"] = steps, batch_size, "validation"
    table["round"] = round_
    print(f"total wall {time.perf_counter() - t0:.0f}s")
    path = Path(__file__).with_name("pilot_lr_grid.csv")
    if round_ > 1:
        table = pd.concat([pd.read_csv(path), table], ignore_index=True)
    table.to_csv(path, index=False, float_format="%.6g")
    best = table[table["arm"] != "zero_shot"].sort_values("mrr10").groupby("arm").tail(1)
    print(table[["arm", "n_layers", "lr", "mrr10", "recall10", "final_loss", "wall_s"]].to_string(index=False))
    print("chosen:", {r.arm: r.lr for r in best.itertuples()})
    return table


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    main(round_=int(args[args.index("--round") + 1]) if "--round" in args else 1)

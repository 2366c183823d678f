"""papers.icl_vs_instruction_tuning: task universe, prompt formats, exact match, statistics and verdict rules."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.icl_vs_instruction_tuning.analysis import (agreement_bootstrap, derangement, incapable_gain,
                                                       measure_agreement, measure_no_new_capability,
                                                       spearman_rows)
from papers.icl_vs_instruction_tuning.experiment import RunConfig, build_model, exact_match, run_model
from papers.icl_vs_instruction_tuning.tasks import (ARROW, BOS, EOS, INST, N_SPECIAL, SEP, EvalSet, Universe,
                                                    eval_set, instruction_batch, pretraining_batch,
                                                    task_functions, zipf_prior)
from shared.claims import load_claims

X = np.array([[3, 1, 4, 1]])


@pytest.mark.parametrize("task,expected", [
    ("copy", [3, 1, 4, 1]), ("reverse", [1, 4, 1, 3]), ("shift1", [4, 2, 5, 2]), ("shift3", [6, 4, 7, 4]),
    ("sort_asc", [1, 1, 3, 4]), ("sort_desc", [4, 3, 1, 1]), ("rotate_left", [1, 4, 1, 3]),
    ("rotate_right", [1, 3, 1, 4]), ("swap_pairs", [1, 3, 1, 4]), ("negate", [8, 10, 7, 10]),
    ("repeat_first", [3, 3, 3, 3]), ("repeat_last", [1, 1, 1, 1]), ("reverse_shift1", [2, 5, 2, 4]),
    ("min_repeat", [1, 1, 1, 1]), ("max_repeat", [4, 4, 4, 4]), ("first_half_twice", [3, 1, 3, 1]),
    ("second_half_twice", [4, 1, 4, 1]), ("mirror", [3, 1, 1, 3]), ("add_position", [3, 2, 6, 4]),
    ("cumsum", [3, 4, 8, 9]), ("diff", [3, 10, 3, 9]),
])
def test_tasks_by_hand(task, expected):
    assert task_functions(12)[task](X).tolist() == [expected]


def test_lookup_tasks_are_permutations_and_universe_split():
    f = task_functions(12)
    assert sorted(f["lookup_a"](np.arange(12)[None])[0].tolist()) == list(range(12))
    assert f["lookup_a_reverse"](X).tolist() == f["lookup_a"](X[:, ::-1]).tolist()
    u = Universe()
    assert len(u.names) == 24 and len(set(u.names)) == 24
    assert len(u.it_tasks) == 12 and not set(u.it_tasks) & set(u.heldout_tasks)
    assert sorted(u.it_tasks + u.heldout_tasks) == sorted(u.names)
    assert u.vocab_size == N_SPECIAL + 24 + 12
    # all tasks distinct as functions
    x = np.random.default_rng(0).integers(0, 12, size=(200, 4))
    outs = {t: f[t](x).tobytes() for t in u.names}
    assert len(set(outs.values())) == 24


def test_zipf_prior():
    p = zipf_prior(4, 1.0, seed=3)
    assert p.sum() == pytest.approx(1.0)
    assert sorted(p.tolist(), reverse=True) == pytest.approx([1 / (25 / 12), 0.5 / (25 / 12), (1 / 3) / (25 / 12), 0.25 / (25 / 12)])
    assert not np.allclose(zipf_prior(24, 1.0, 0), zipf_prior(24, 1.0, 1))
    assert np.allclose(zipf_prior(5, 0.0, 0), 0.2)


def test_pretraining_batch_layout():
    u = Universe()
    prior = np.zeros(24)
    prior[u.names.index("reverse")] = 1.0
    ids, att, loss = pretraining_batch(u, prior, 64, 3, 0.5, np.random.default_rng(0))
    assert ids.shape == (64, 2 + 3 * 10 - 1) and att.shape == ids.shape == loss.shape
    assert (ids[:, 0] == BOS).all()
    named = ids[:, 1] == u.name_id("reverse")
    assert 0 < named.sum() < 64
    for r in range(64):
        body = ids[r, 2:] if named[r] else ids[r, 1:-1]
        assert att[r].sum() == (ids.shape[1] if named[r] else ids.shape[1] - 1)
        for p in range(3):
            blk = body[p * 10: p * 10 + 9].numpy() - u.symbol_offset
            assert body[p * 10 + 4] == ARROW
            assert blk[5:9].tolist() == blk[0:4][::-1].tolist()
            if p < 2:
                assert body[p * 10 + 9] == SEP
        assert loss[r].sum() == 12  # the 4 output tokens of 3 pairs
        assert (ids[r][loss[r]] >= u.symbol_offset).all()


def test_instruction_batch_and_eval_formats():
    u = Universe()
    ids, loss = instruction_batch(u, ["negate"], 8, np.random.default_rng(0))
    assert ids.shape == (8, 12)
    assert (ids[:, 0] == INST).all() and (ids[:, 1] == u.name_id("negate")).all()
    assert (ids[:, 6] == ARROW).all() and (ids[:, -1] == EOS).all()
    x, y = ids[:, 2:6] - u.symbol_offset, ids[:, 7:11] - u.symbol_offset
    assert torch.equal(y, 11 - x)
    assert loss[0].tolist() == [False] * 7 + [True] * 5
    icl = eval_set(u, "sort_asc", "icl", 5, 3, seed=1)
    ins = eval_set(u, "sort_asc", "instruction", 5, 3, seed=1)
    nam = eval_set(u, "sort_asc", "named", 5, 3, seed=1)
    assert icl.input_ids.shape == (5, 1 + 3 * 10 + 9) and ins.input_ids.shape == (5, 11)
    # the name and the query sit where a named pretraining episode has them (learned absolute positions)
    assert ins.input_ids.shape == nam.input_ids.shape and (nam.input_ids[:, 0] == BOS).all()
    assert torch.equal(icl.input_ids[:, -9:], ins.input_ids[:, -9:])  # same queries in every format
    assert torch.equal(nam.input_ids[:, -9:], ins.input_ids[:, -9:])
    assert (icl.input_ids != INST).all() and (ins.input_ids[:, 0] == INST).all()
    q = icl.input_ids[:, -9:] - u.symbol_offset
    assert torch.equal(q[:, 5:], q[:, :4].sort(dim=1).values)
    assert not torch.equal(eval_set(u, "sort_asc", "icl", 5, 3, seed=2).input_ids, icl.input_ids)


class _Oracle(torch.nn.Module):
    """Logits that put all mass on the next token of the given sequence, except at ``wrong`` positions."""

    def __init__(self, vocab, wrong=()):
        super().__init__()
        self.vocab, self.wrong = vocab, set(wrong)

    def forward(self, input_ids, use_cache=False):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.vocab)
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
        logits.scatter_(2, nxt[:, :, None], 1.0)
        for r, t in self.wrong:
            logits[r, t] = 0
            logits[r, t, (nxt[r, t] + 1) % self.vocab] = 1.0
        return type("Out", (), {"logits": logits})()


def test_exact_match_teacher_forced():
    ids = torch.tensor([[1, 2, 7, 8, 9, 10], [1, 2, 7, 8, 9, 10], [1, 2, 7, 8, 9, 10]])
    es = EvalSet(ids, 3)
    assert exact_match(_Oracle(12), es).tolist() == [True, True, True]
    # row 1: wrong prediction of the last answer token (position 4 predicts token 5); row 2: wrong
    # prediction at a prompt position (position 0), which is not scored
    assert exact_match(_Oracle(12, wrong=[(1, 4), (2, 0)]), es).tolist() == [True, False, True]


def test_spearman_and_bootstrap():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]])
    b = np.array([[10, 20, 30, 40], [4, 3, 2, 1], [1, 2, 3, 4]])
    assert spearman_rows(a, b).tolist() == pytest.approx([1.0, -1.0, 0.0])
    assert spearman_rows([[1, 2, 2, 3]], [[1, 3, 2, 4]])[0] == pytest.approx(0.9486833, abs=1e-6)
    x = np.tile(np.arange(10.0), (3, 1))
    v, lo, hi = agreement_bootstrap(x, x ** 2, n_boot=200)
    assert v == 1.0 and lo == pytest.approx(1.0) and hi == 1.0
    v, lo, hi = agreement_bootstrap(x, -x, n_boot=200)
    assert v == -1.0 and hi == pytest.approx(-1.0)


def test_derangement_has_no_fixed_point():
    for seed in range(20):
        p = derangement(7, seed)
        assert sorted(p.tolist()) == list(range(7)) and (p != np.arange(7)).all()


def _table(it_train=0.9, held_tuned=None, held_icl=None, it_icl=None, seeds=(0, 1, 2)):
    """Synthetic accuracy table: 6 training and 6 held-out tasks."""
    held_tuned = held_tuned if held_tuned is not None else [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    held_icl = held_icl if held_icl is not None else [0.05, 0.1, 0.4, 0.6, 0.8, 0.95]
    it_icl = it_icl if it_icl is not None else [0.0, 0.05, 0.1, 0.5, 0.9, 0.9]
    rows = []
    for s in seeds:
        for i in range(6):
            rows += [{"seed": s, "stage": "tuned", "format": "instruction", "split": "heldout", "task": f"h{i}", "accuracy": held_tuned[i]},
                     {"seed": s, "stage": "base", "format": "icl", "split": "heldout", "task": f"h{i}", "accuracy": held_icl[i]},
                     {"seed": s, "stage": "tuned", "format": "instruction", "split": "it", "task": f"t{i}", "accuracy": it_train},
                     {"seed": s, "stage": "base", "format": "icl", "split": "it", "task": f"t{i}", "accuracy": it_icl[i]},
                     {"seed": s, "stage": "base", "format": "named", "split": "it", "task": f"t{i}", "accuracy": 0.9}]
    return pd.DataFrame(rows)


def test_measure_agreement_reproduced_and_failed_gate():
    claim = load_claims("icl_vs_instruction_tuning")["it_icl_rank_agreement"]
    m, gate, control, _ = measure_agreement(_table(), n_boot=500)
    assert m.value == pytest.approx(1.0) and gate.passed
    assert control.measured.value < 0.5  # permuted labels break the agreement
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "reproduced"
    m, gate, control, _ = measure_agreement(_table(it_train=0.5), n_boot=500)  # format not learned (0.5 < 0.9 - 0.1)
    assert not gate.passed
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "inconclusive"
    m, gate, control, _ = measure_agreement(_table(held_icl=[0.95, 0.8, 0.6, 0.4, 0.1, 0.05]), n_boot=500)
    assert m.value == pytest.approx(-1.0)
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "not_reproduced"
    _, gate, _, _ = measure_agreement(_table(held_icl=[0.5] * 6), n_boot=100)  # no spread: gate fails
    assert not gate.passed


def test_measure_agreement_control_that_passes_makes_it_inconclusive():
    """If every held-out task had the same ranks after permutation (all ties), the control could not
    discriminate: a control meeting the criterion must block `reproduced`."""
    claim = load_claims("icl_vs_instruction_tuning")["it_icl_rank_agreement"]
    m, gate, control, _ = measure_agreement(_table(), n_boot=500)
    claim.evaluate(m, gate=gate, control=type(control)(m, detail="a control that agrees"))
    assert claim.verdict == "inconclusive"


def test_measure_no_new_capability():
    claim = load_claims("icl_vs_instruction_tuning")["no_unlock_beyond_icl"]
    # held-out pairs with ICL < 0.2: h0 (gain -0.05), h1 (gain 0.0) -> 2 per seed, 6 pairs
    m, gate, control, _ = measure_no_new_capability(_table(), n_boot=500)
    assert m.n == 6 and m.value == pytest.approx(-0.025)
    assert gate.passed and control.measured.n == 9  # t0, t1, t2 per seed
    assert control.measured.value == pytest.approx(0.9 - 0.05)  # tuning on the task unlocks it
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "reproduced"
    # tuning unlocks held-out tasks: gain 0.6 on the incapable pairs -> not reproduced
    m, gate, control, _ = measure_no_new_capability(_table(held_tuned=[0.6, 0.7, 0.3, 0.5, 0.7, 0.9]), n_boot=500)
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "not_reproduced"
    # a control that passes (tuning did not unlock even its own tasks) -> inconclusive
    m, gate, control, _ = measure_no_new_capability(_table(it_icl=[0.0] * 6, it_train=0.8), n_boot=500)
    claim.evaluate(m, gate=gate, control=type(control)(m))
    assert claim.verdict == "inconclusive"
    # too few incapable held-out pairs: gate fails
    _, gate, _, _ = measure_no_new_capability(_table(held_icl=[0.5] * 6), n_boot=100)
    assert not gate.passed
    assert len(incapable_gain(_table(), "it")) == 9


def test_run_model_few_steps_is_deterministic():
    cfg = RunConfig(pretrain_steps=3, it_steps=2, n_eval=20, n_tasks=6, n_it_tasks=3)
    a, b = run_model(5, cfg), run_model(5, cfg)
    assert a["rows"] == b["rows"]
    df = pd.DataFrame(a["rows"])
    assert set(df["stage"]) == {"base", "tuned"} and len(df) == 6 * 3 + 6 * 2
    assert a["curves"][-1]["phase"] == "instruction_tuning"
    assert build_model(cfg).config.vocab_size == N_SPECIAL + 6 + 12

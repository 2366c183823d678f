"""papers.stat: the skill world, the step student, the programmatic teacher, the selections and the claims'
statistics, against hand-computed cases."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from papers.stat.analysis import (arm_summary, measure_gain, measure_profile, measure_vanilla_gain, paired_differences,
                                  saturation_gate, spearman)
from papers.stat.method import (ARMS, Problems, StepStudent, World, accuracy, allocate, bag_embedding, concat,
                                make_batch_fn, make_world, missing_skill_profile, missing_skills,
                                per_skill_step_accuracy, rollout, run_seed, sample_problems, select_by_profile,
                                select_similar, select_uniform, solve, step_correct, step_loss, zipf_freqs)
from shared.claims import load_claims

W7 = World(p=7, a=np.array([2, 1]), b=np.array([3, 1]), freqs=np.array([0.5, 0.5]))  # 2x+3 and x+1 mod 7


def test_zipf_freqs():
    assert zipf_freqs(2, 1.0) == pytest.approx([2 / 3, 1 / 3])
    assert zipf_freqs(4, 0.0) == pytest.approx([0.25] * 4)
    f = zipf_freqs(12, 1.2)
    assert f.sum() == pytest.approx(1.0) and np.all(np.diff(f) < 0)


def test_make_world_gives_distinct_non_identity_bijections():
    w = make_world(11, 20, 1.0, np.random.default_rng(0))
    pairs = set(zip(w.a.tolist(), w.b.tolist()))
    assert len(pairs) == 20 and (1, 0) not in pairs
    for a, b in pairs:
        assert sorted((a * np.arange(11) + b) % 11) == list(range(11))
    with pytest.raises(ValueError):
        make_world(3, 6, 1.0, np.random.default_rng(0))


def test_solve_by_hand():
    # 1 -> 2*1+3 = 5 -> 2*5+3 = 13 = 6 (mod 7); second problem 4 -> 5, then padding repeats the answer
    st = solve(W7, np.array([1, 4]), np.array([[0, 0], [1, -1]]))
    assert st.tolist() == [[1, 5, 6], [4, 5, 5]]
    pr = Problems(np.array([1, 4]), np.array([[0, 0], [1, -1]]), st)
    assert pr.lengths.tolist() == [2, 1] and pr.answers.tolist() == [6, 5]


def test_sample_problems_lengths_and_mixture():
    w = make_world(13, 3, 1.0, np.random.default_rng(1))
    pr = sample_problems(w, 6000, [2, 3], np.random.default_rng(2))
    assert set(pr.lengths.tolist()) == {2, 3}
    share = np.bincount(pr.skills[pr.skills >= 0], minlength=3) / (pr.skills >= 0).sum()
    assert share == pytest.approx(w.freqs, abs=0.02)
    assert (pr.states == solve(w, pr.x0, pr.skills)).all()
    flat = sample_problems(w, 6000, [1], np.random.default_rng(2), freqs=np.array([0, 0, 1.0]))
    assert (flat.skills == 2).all()


def test_concat_pads_to_the_longest():
    a = Problems(np.array([1]), np.array([[0]]), solve(W7, np.array([1]), np.array([[0]])))
    b = Problems(np.array([4]), np.array([[1, 1]]), solve(W7, np.array([4]), np.array([[1, 1]])))
    c = concat([a, b])
    assert c.skills.tolist() == [[0, -1], [1, 1]] and c.states.tolist() == [[1, 5, 5], [4, 5, 6]]
    assert c.answers.tolist() == [5, 6]


class Oracle(nn.Module):
    """A student that knows the tables exactly, except the entries listed in ``wrong`` ((state, skill) -> 0)."""

    def __init__(self, world, wrong=()):
        super().__init__()
        x = np.arange(world.p)
        table = (world.a[None, :] * x[:, None] + world.b[None, :]) % world.p  # (p, K)
        for s, k in wrong:
            table[s, k] = (table[s, k] + 1) % world.p
        self.table = torch.as_tensor(table)
        self.p = world.p

    def forward(self, state, skill):
        return torch.nn.functional.one_hot(self.table[state, skill], self.p).float() * 10


def _two_problems():
    skills = np.array([[0, 1], [1, 0]])
    return Problems(np.array([1, 1]), skills, solve(W7, np.array([1, 1]), skills))  # 1->5->6 ; 1->2->0


def test_rollout_step_correct_and_teacher():
    pr = _two_problems()
    assert accuracy(Oracle(W7), pr) == 1.0
    bad = Oracle(W7, wrong=[(5, 1)])  # the second step of problem 0 (state 5, skill 1) is wrong
    assert rollout(bad, pr).tolist() == [0, 0]  # 5 + 1 + 1 = 7 = 0 instead of 6
    assert accuracy(bad, pr) == 0.5
    corr = step_correct(bad, pr)
    assert corr.tolist() == [[True, False], [True, True]]
    assert per_skill_step_accuracy(corr, pr, 2).tolist() == [1.0, 0.5]
    counts, failed = missing_skill_profile(rollout(bad, pr) == pr.answers, corr, pr, 2, max_failures=10, max_skills=3)
    assert counts.tolist() == [0, 1] and failed.tolist() == [0]
    # the loss of the oracle is ~0, of a uniform predictor log p
    batch = make_batch_fn(pr, 4, seed=0)(0)
    assert batch[0].shape == batch[1].shape == batch[2].shape and len(batch[0]) == 8  # 4 problems x 2 steps
    assert float(step_loss(Oracle(W7), batch)) < 1e-3
    assert float(step_loss(lambda s, k: torch.zeros(len(s), 7), batch)) == pytest.approx(np.log(7))


def test_missing_skills_distinct_in_step_order_and_capped():
    assert missing_skills(np.array([2, 0, 2, 1, -1]), np.array([False, True, False, False, False]), 3) == [2, 1]
    assert missing_skills(np.array([2, 0, 2, 1]), np.array([False, False, False, False]), 2) == [2, 0]
    assert missing_skills(np.array([2, 0]), np.array([True, True]), 3) == []


def test_allocate_largest_remainder():
    assert allocate(np.array([3, 1, 0]), 5).tolist() == [4, 1, 0]  # exact 3.75, 1.25, 0
    assert allocate(np.array([1, 1, 1]), 4).tolist() == [2, 1, 1]  # ties to the lower index
    assert allocate(np.array([5, 7, 11]), 1000).sum() == 1000
    with pytest.raises(ValueError):
        allocate(np.zeros(3), 5)


def test_selections():
    w = make_world(13, 4, 1.0, np.random.default_rng(3))
    pool = sample_problems(w, 3000, [2, 3], np.random.default_rng(4))
    rng = np.random.default_rng(5)
    sel = select_by_profile(pool, np.array([0, 0, 1, 3]), 200, rng)
    assert len(sel) == 200 and len(set(sel.tolist())) == 200
    has2, has3 = (pool.skills[sel] == 2).any(1), (pool.skills[sel] == 3).any(1)
    assert (has2 | has3).all() and has3.sum() >= 150
    # the pool runs out: with replacement, still only problems with the skill
    tiny = pool.subset(np.nonzero((pool.skills == 3).any(1))[0][:5])
    sel = select_by_profile(tiny, np.array([0, 0, 0, 1]), 12, rng)
    assert len(sel) == 12 and (tiny.skills[sel] == 3).any(1).all()
    uni = select_uniform(pool, 300, rng)
    assert len(set(uni.tolist())) == 300


def test_bag_embedding_and_similarity_selection():
    pr = Problems(np.array([1]), np.array([[0, 0, -1]]), solve(W7, np.array([1]), np.array([[0, 0, -1]])))
    assert bag_embedding(pr, 7, 2)[0] == pytest.approx(np.array([0, 1, 0, 0, 0, 0, 0, 2, 0]) / np.sqrt(5))
    w = make_world(13, 4, 1.0, np.random.default_rng(3))
    pool = sample_problems(w, 500, [2, 3], np.random.default_rng(4))
    fails = pool.subset([17, 230])
    sel = select_similar(pool, fails, 10, 13, 4)
    # round robin: each failure's nearest pool problem first (itself, or a problem with the same bag)
    e_pool, e_fail = bag_embedding(pool, 13, 4), bag_embedding(fails, 13, 4)
    assert (e_pool[sel[:2]] * e_fail).sum(1) == pytest.approx([1.0, 1.0])
    assert len(set(sel.tolist())) == 10


def test_student_shapes():
    m = StepStudent(7, 2, 16)
    assert m(torch.tensor([0, 6, 3]), torch.tensor([1, 0, 1])).shape == (3, 7)


def test_run_seed_tiny_is_deterministic_and_complete():
    cfg = dict(p=7, n_skills=3, zipf=1.0, lengths=[2], ood_lengths=[3], n_pretrain=40, n_pool=300, n_val=60,
               n_test=50, hidden=16, batch_size=16, pretrain_steps=20, lr=3e-3, eval_every=10, max_failures=20,
               max_skills=2, n_extra=20, continue_steps=10, lr_continue=1e-3)
    a, b = run_seed(5, cfg), run_seed(5, cfg)
    assert a["rows"] == b["rows"]
    assert [r["arm"] for r in a["rows"]] == ["base", *ARMS]
    assert len(a["profile"]) == 3 and [r["step"] for r in a["curve"]] == [10, 20]


# --------------------------------------------------------------------------------------------- analysis
def _rows(gains, replay=0.0, base=0.8, shuffled=None, uniform_b=None):
    """Synthetic per-seed table: base, replay = base + replay, uniform = base + 0.02, stat_sel = uniform + gain."""
    out = []
    for s, g in enumerate(gains):
        acc = {"base": base, "replay": base + replay, "uniform": base + 0.02, "uniform_b": base + 0.02 + (uniform_b or 0),
               "stat_sel": base + 0.02 + g, "stat_shuffled": base + 0.02 + (shuffled[s] if shuffled else 0.0),
               "similarity": base + 0.03}
        out += [{"seed": s, "arm": k, "id_acc": v, "ood_acc": v - 0.1} for k, v in acc.items()]
    return pd.DataFrame(out)


def test_paired_differences_and_summary():
    rows = _rows([0.05, 0.06, 0.07])
    assert paired_differences(rows, "stat_sel", "uniform", "id_acc").tolist() == pytest.approx([0.05, 0.06, 0.07])
    s = arm_summary(rows)
    assert s.set_index(["arm", "test"]).loc[("stat_sel", "ID (2-3 steps)"), "mean_gain"] == pytest.approx(0.08)
    with pytest.raises(KeyError):
        paired_differences(rows, "stat_syn", "uniform", "id_acc")


def test_measure_gain_reproduced_failed_gate_and_passing_control():
    claims = load_claims("stat")
    kw = dict(min_acc=0.5, max_acc=0.95, plateau_tol=0.01, control_detail="shuffled")
    # mean 0.06, t interval 0.06 +- 4.303 * 0.01/sqrt(3) = [0.0352, 0.0848] > 0.03; control at 0
    m, g, c = measure_gain(_rows([0.05, 0.06, 0.07]), "stat_sel", "uniform", "id_acc", "stat_shuffled", "uniform", **kw)
    assert m.value == pytest.approx(0.06) and m.ci_low == pytest.approx(0.06 - 4.302653 * 0.01 / np.sqrt(3), abs=1e-5)
    assert g.passed and c.measured.value == pytest.approx(0.0)
    assert claims["stat_sel_gain_id"].evaluate(m, gate=g, control=c).verdict == "reproduced"
    # not saturated: replay gains 0.05 -> gate fails -> inconclusive
    m, g, c = measure_gain(_rows([0.05, 0.06, 0.07], replay=0.05), "stat_sel", "uniform", "id_acc", "stat_shuffled",
                           "uniform", **kw)
    assert not g.passed
    assert claims["stat_sel_gain_id"].evaluate(m, gate=g, control=c).verdict == "inconclusive"
    # the shuffled-profile control meets the criterion too -> does not discriminate -> inconclusive
    m, g, c = measure_gain(_rows([0.05, 0.06, 0.07], shuffled=[0.05, 0.06, 0.07]), "stat_sel", "uniform", "id_acc",
                           "stat_shuffled", "uniform", **kw)
    res = claims["stat_sel_gain_id"].evaluate(m, gate=g, control=c)
    assert res.verdict == "inconclusive" and "does not discriminate" in res.reason
    # a base student at chance fails the gate; a gain below the bar with the gate passed is not_reproduced
    assert not saturation_gate(_rows([0.0, 0.0, 0.0], base=0.1), 0.5, 0.95, 0.01).passed
    m, g, c = measure_gain(_rows([0.0, 0.001, -0.001]), "stat_sel", "uniform", "id_acc", "stat_shuffled", "uniform", **kw)
    assert claims["stat_sel_gain_id"].evaluate(m, gate=g, control=c).verdict == "not_reproduced"


def test_spearman_and_measure_profile():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    rows = []
    for seed, shuf in enumerate([[3, 1, 2, 0], [0, 3, 2, 1], [1, 0, 3, 2]]):
        for k in range(4):
            rows.append({"seed": seed, "skill": k, "missing": k * 10, "missing_shuffled": shuf[k],
                         "test_step_error": 0.1 * k})
    prof = pd.DataFrame(rows)
    m, g, c = measure_profile(prof, {0: 200, 1: 150, 2: 300}, 100)
    assert m.value == pytest.approx(1.0) and g.passed and g.value == 150
    assert c.measured.value == pytest.approx(np.mean([-0.8, 0.2, 0.6]), abs=1e-12)  # 1 - 6 sum d^2 / (4 * 15)
    claims = load_claims("stat")
    assert claims["profile_tracks_heldout_weakness"].evaluate(m, gate=g, control=c).verdict == "passed"
    m, g, c = measure_profile(prof, {0: 200, 1: 50, 2: 300}, 100)
    assert not g.passed
    assert claims["profile_tracks_heldout_weakness"].evaluate(m, gate=g, control=c).verdict == "failed"


def test_measure_vanilla_gain():
    claims = load_claims("stat")
    kw = dict(min_acc=0.5, max_acc=0.95, plateau_tol=0.01)
    rows = _rows([0.0, 0.0, 0.0])
    rows.loc[rows["arm"] == "uniform", "id_acc"] = 0.8 + np.array([0.01, 0.02, 0.03])  # interval straddles 0.02
    m, g = measure_vanilla_gain(rows, **kw)
    assert m.value == pytest.approx(0.02) and g.passed
    assert claims["vanilla_sft_gain_small_id"].evaluate(m, gate=g).verdict == "inconclusive"
    rows.loc[rows["arm"] == "uniform", "id_acc"] = 0.8 + np.array([0.0, 0.005, 0.01])  # gains 0, .005, .01
    m, g = measure_vanilla_gain(rows, **kw)
    assert m.ci_high == pytest.approx(0.005 + 4.302653 * 0.005 / np.sqrt(3), abs=1e-5)  # 0.0174 < 0.02
    assert claims["vanilla_sft_gain_small_id"].evaluate(m, gate=g).verdict == "reproduced"
    rows.loc[rows["arm"] == "uniform", "id_acc"] = 0.8 + np.array([0.05, 0.06, 0.07])
    m, g = measure_vanilla_gain(rows, **kw)
    assert claims["vanilla_sft_gain_small_id"].evaluate(m, gate=g).verdict == "not_reproduced"

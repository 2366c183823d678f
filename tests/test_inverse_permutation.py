"""papers.inverse_permutation: generator, ceiling, models and verdict rules."""

import pandas as pd
import pytest
import torch

from papers.inverse_permutation.analysis import (decide_ceiling, decide_impossibility, decide_solved)
from papers.inverse_permutation.experiment import (DisentangledAttentionOnly, ModelSpec, arm_list,
                                                   build_model, make_claims, readout_logits)
from papers.inverse_permutation.task import (TaskSpec, accessible, accuracy_ceiling, sample_batch,
                                             visible_fraction, visible_fraction_enumerated)


def test_batch_layout_matches_definition():
    spec = TaskSpec(n=4, n_symbols=5, k=2)
    b = sample_batch(spec, 64, torch.Generator().manual_seed(0))
    assert b.tokens.shape == (64, 10) and b.targets.shape == (64, 4)
    pi = b.tokens[:, :4]
    y_p = b.tokens[:, 4:8] - 4
    assert (b.tokens[:, 8:] == spec.scratch_id).all()
    assert torch.equal(pi.sort(dim=1).values, torch.arange(4).expand(64, 4))  # a permutation per row
    # Y_P[j] = Y[pi(j)]  and  Y[i] = Y_P[s(i)] with s = pi^{-1}
    assert torch.equal(y_p, torch.gather(b.targets, 1, pi))
    assert torch.equal(b.targets, torch.gather(y_p, 1, b.source))
    assert torch.equal(torch.gather(pi, 1, b.source), torch.arange(4).expand(64, 4))
    assert spec.vocab_size == 10 and spec.seq_len == 10
    assert spec.readout_positions().tolist() == [6, 7, 8, 9]


def test_hand_worked_example():
    # pi = (2, 0, 1): Y_P = (Y[2], Y[0], Y[1]); s = pi^{-1} = (1, 2, 0)
    source = torch.tensor([[1, 2, 0]])
    # k = 0: output 0 needs position 1 (> 0, hidden), output 1 needs 2 (> 1, hidden), output 2 needs 0
    assert accessible(source, 0).tolist() == [[False, False, True]]
    assert accessible(source, 1).tolist() == [[True, True, True]]


@pytest.mark.parametrize("n,k", [(2, 0), (3, 0), (4, 1), (5, 2), (6, 0), (6, 6)])
def test_ceiling_formula_matches_enumeration(n, k):
    assert visible_fraction(n, k) == pytest.approx(visible_fraction_enumerated(n, k))


def test_ceiling_known_values():
    assert visible_fraction(2, 0) == 0.75  # identity: both visible; swap: one of two
    assert visible_fraction(8, 0) == pytest.approx(36 / 64)  # (n + 1) / 2n
    assert visible_fraction(8, 8) == 1.0
    assert accuracy_ceiling(8, 0, 16) == pytest.approx(36 / 64 + (28 / 64) / 16)


def test_empirical_visible_fraction_agrees_with_formula():
    spec = TaskSpec(n=8, n_symbols=4, k=2)
    b = sample_batch(spec, 20000, torch.Generator().manual_seed(1))
    assert accessible(b.source, 2).float().mean().item() == pytest.approx(visible_fraction(8, 2), abs=0.01)


@pytest.mark.parametrize("architecture", ["disentangled", "standard"])
def test_causal_readout_cannot_see_later_symbols(architecture):
    """Changing Y_P after position i must not change the causal model's output i (k = 0)."""
    spec = TaskSpec(n=6, n_symbols=7, k=0)
    torch.manual_seed(0)
    model = build_model(ModelSpec(architecture, 2, d_model=32), spec, causal=True).eval()
    b = sample_batch(spec, 16, torch.Generator().manual_seed(0))
    changed = b.tokens.clone()
    changed[:, 6 + 3:] = 6 + (changed[:, 6 + 3:] - 6 + 1) % 7  # alter Y_P[3:]
    with torch.no_grad():
        a, c = readout_logits(model, b.tokens, spec), readout_logits(model, changed, spec)
    assert torch.allclose(a[:, :3], c[:, :3], atol=1e-5)
    assert not torch.allclose(a[:, 3:], c[:, 3:])


def test_disentangled_width_doubles_per_layer():
    model = DisentangledAttentionOnly(vocab_size=5, max_len=7, n_layers=3, n_out=4, causal=False)
    assert [tuple(A.shape) for A in model.A] == [(12, 12), (24, 24), (48, 48)]
    assert model.readout.in_features == 96
    assert model(torch.zeros(2, 7, dtype=torch.long)).shape == (2, 7, 4)


def test_arm_list():
    assert arm_list([0, 4], ["disentangled"]) == [
        ("disentangled", "bidirectional", 0), ("disentangled", "causal", 0), ("disentangled", "causal", 4)]


def _row(attention, k, seed, correct, rows, vis_c, vis_r, arch="disentangled"):
    return {"architecture": arch, "attention": attention, "k": k, "seed": seed, "correct": correct,
            "rows": rows, "visible_correct": vis_c, "visible_rows": vis_r,
            "invisible_correct": correct - vis_c, "invisible_rows": rows - vis_r}


def _claims():
    return {c.id: c for c in make_claims()}


def test_impossibility_verdicts():
    chance = [_row("causal", 0, s, 5000 + 250, 10000, 5000, 6000) for s in range(3)]  # 250/4000 = 1/16
    c = decide_impossibility(_claims()["impossibility"], pd.DataFrame(chance), 16)
    assert c.verdict == "reproduced" and c.measured.value == pytest.approx(1 / 16)
    leaky = [_row("causal", 0, s, 5000 + 1000, 10000, 5000, 6000) for s in range(3)]  # 25% on hidden rows
    assert decide_impossibility(_claims()["impossibility"], pd.DataFrame(leaky), 16).verdict == "not_reproduced"


def test_solved_verdicts():
    good = pd.DataFrame([_row("bidirectional", 0, s, 995, 1000, 995, 1000) for s in range(3)])
    assert decide_solved(_claims()["no_mask_construction"], good, "bidirectional", 0).verdict == "reproduced"
    mixed = pd.concat([good, pd.DataFrame([_row("bidirectional", 0, s, 500, 1000, 500, 1000, arch="standard")
                                           for s in range(3)])])
    c = decide_solved(_claims()["no_mask_construction"], mixed, "bidirectional", 0)
    assert c.verdict == "inconclusive" and c.measured.value == pytest.approx(0.5)


def test_ceiling_verdicts():
    n, V = 8, 16
    ceil = accuracy_ceiling(n, 2, V)

    def frame(acc):
        return pd.DataFrame([_row("causal", 2, s, round(acc * 10000), 10000, 0, 0) for s in range(3)])

    assert decide_ceiling(_claims()["ceiling_curve"], frame(ceil - 0.01), n, V).verdict == "reproduced"
    assert decide_ceiling(_claims()["ceiling_curve"], frame(ceil - 0.2), n, V).verdict == "inconclusive"
    assert decide_ceiling(_claims()["ceiling_curve"], frame(ceil + 0.1), n, V).verdict == "not_reproduced"
    none = decide_ceiling(_claims()["ceiling_curve"], frame(ceil).assign(k=0), n, V)
    assert none.verdict == "inconclusive" and none.measured.value is None

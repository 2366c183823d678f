"""papers.inverse_permutation: generator, ceiling, models and verdict rules."""

import pandas as pd
import pytest
import torch

from papers.inverse_permutation.analysis import (VISIBLE_GATE, measure_ceiling, measure_invisible_rows,
                                                 measure_solved)
from papers.inverse_permutation.experiment import (DisentangledAttentionOnly, ModelSpec, arm_list,
                                                   build_model, readout_logits)
from shared.claims import load_claims
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
    return load_claims("inverse_permutation")


def test_registry_loads_and_kinds():
    c = _claims()
    assert list(c) == ["invisible_rows_at_chance", "no_mask_solves", "scratch_solves", "ceiling_curve_all_k"]
    assert [x.kind for x in c.values()] == ["check", "check", "check", "replication"]
    assert c["ceiling_curve_all_k"].has_gate and not c["invisible_rows_at_chance"].has_gate
    assert all(x.has_control for x in c.values())


def _grid(causal_acc, bidir=1.0, n=8, V=16, seeds=(0, 1, 2), rows=10000, invisible_hits=None):
    """A synthetic results table: per causal k the given (visible accuracy) with invisible rows at
    ``invisible_hits`` / chance; the visible-row counts follow the exact ceiling fractions."""
    from papers.inverse_permutation.task import visible_fraction

    out = []
    for s in seeds:
        vis_r = round(visible_fraction(n, 0) * rows)
        out.append(_row("bidirectional", 0, s, round(bidir * rows), rows, round(bidir * vis_r), vis_r))
        for k, vis_acc in causal_acc.items():
            vis_r = round(visible_fraction(n, k) * rows)
            inv_r = rows - vis_r
            inv_c = round((invisible_hits if invisible_hits is not None else 1 / V) * inv_r)
            vis_c = round(vis_acc * vis_r)
            out.append(_row("causal", k, s, vis_c + inv_c, rows, vis_c, vis_r))
    return pd.DataFrame(out)


def test_invisible_rows_check_passes_at_chance_and_control_fails():
    df = _grid({0: 1.0, 2: 1.0, 8: 1.0})
    m, control, _ = measure_invisible_rows(df, 8, 16)
    c = _claims()["invisible_rows_at_chance"].evaluate(m, control=control)
    assert abs(m.value) < 0.001 and m.ci_low < 0 < m.ci_high
    # the bidirectional model answers all the rows a causal one cannot see: 1 - 1/16 above chance
    assert control.measured.value == pytest.approx(1 - 1 / 16, abs=1e-3)
    assert c.verdict == "passed" and c.control_meets is False


def test_invisible_rows_check_fails_when_hidden_rows_leak():
    df = _grid({0: 1.0, 2: 1.0}, invisible_hits=0.25)  # 25% on rows the mask hides: a leak
    m, control, _ = measure_invisible_rows(df, 8, 16)
    c = _claims()["invisible_rows_at_chance"].evaluate(m, control=control)
    assert m.value == pytest.approx(0.25 - 1 / 16, abs=2e-3)
    assert c.verdict == "failed"


def test_invisible_rows_check_fails_when_control_is_at_chance_too():
    df = _grid({0: 1.0}, bidir=36 / 64 + (28 / 64) / 16)  # a "bidirectional" arm that behaves causally
    df.loc[df["attention"] == "bidirectional", "invisible_correct"] = round(4375 / 16)
    df.loc[df["attention"] == "bidirectional", "invisible_rows"] = 4375
    m, control, _ = measure_invisible_rows(df, 8, 16)
    c = _claims()["invisible_rows_at_chance"].evaluate(m, control=control)
    assert c.control_meets is True and c.verdict == "failed"


def test_solved_checks():
    df = _grid({0: 0.95, 8: 1.0})
    m, control, _ = measure_solved(df, "causal", 8)
    c = _claims()["scratch_solves"].evaluate(m, control=control)
    assert m.value == 1.0 and c.verdict == "passed" and c.control_meets is False
    # the control is the causal k=0 arm: 0.95 on 56% of rows + chance on the rest
    assert control.measured.value == pytest.approx(0.5625 * 0.95 + 0.4375 / 16, abs=1e-3)
    low = _grid({0: 0.95, 8: 0.97})
    m, control, _ = measure_solved(low, "causal", 8)
    assert _claims()["scratch_solves"].evaluate(m, control=control).verdict == "failed"
    # with two architectures, the weaker one decides
    mixed = pd.concat([df, _grid({0: 0.9}, bidir=0.5).assign(architecture="standard")])
    m, control, detail = measure_solved(mixed, "bidirectional", 0)
    assert m.value == pytest.approx(0.5) and "standard: 0.5000" in detail
    assert _claims()["no_mask_solves"].evaluate(m, control=control).verdict == "failed"


def test_ceiling_reproduced_when_every_arm_is_at_its_ceiling():
    df = _grid({0: 1.0, 1: 1.0, 2: 0.995, 4: 1.0, 8: 1.0})
    m, gate, control, detail = measure_ceiling(df, 8, 16)
    c = _claims()["ceiling_curve_all_k"].evaluate(m, gate=gate, control=control, detail=detail)
    assert gate.passed and m.ci_high < 0.02
    # control: bidirectional accuracy 1.0 against ceiling(0) = 36/64 + 28/64/16
    assert control.measured.value == pytest.approx(1 - (36 / 64 + 28 / 1024), abs=1e-3)
    assert c.verdict == "reproduced" and c.control_meets is False


def test_ceiling_gate_failure_is_inconclusive():
    df = _grid({0: 0.85, 1: 1.0, 8: 1.0})  # k = 0 under-trained: 85% of visible rows
    m, gate, control, _ = measure_ceiling(df, 8, 16)
    c = _claims()["ceiling_curve_all_k"].evaluate(m, gate=gate, control=control)
    assert not gate.passed and gate.value == pytest.approx(0.85, abs=1e-3)
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")


def test_ceiling_not_reproduced_when_trained_models_fall_short():
    # gate passes (visible >= 0.90), but at k = 0 every seed is 0.92 * 0.5625 + ... : 4.5 points short
    df = _grid({0: 0.92, 2: 1.0, 8: 1.0})
    m, gate, control, _ = measure_ceiling(df, 8, 16)
    c = _claims()["ceiling_curve_all_k"].evaluate(m, gate=gate, control=control)
    assert gate.passed and m.ci_low == pytest.approx(0.08 * 0.5625, abs=1e-3)
    assert c.verdict == "not_reproduced"
    assert VISIBLE_GATE == 0.90


def test_ceiling_control_meeting_the_criterion_makes_it_inconclusive():
    ceiling0 = 36 / 64 + 28 / 1024
    df = _grid({0: 1.0, 8: 1.0}, bidir=ceiling0)  # a "bidirectional" model stuck at the causal ceiling
    m, gate, control, _ = measure_ceiling(df, 8, 16)
    c = _claims()["ceiling_curve_all_k"].evaluate(m, gate=gate, control=control)
    assert c.control_meets is True and c.verdict == "inconclusive"


def test_ceiling_interval_is_range_of_per_seed_worst():
    df = _grid({0: 1.0, 8: 1.0})
    df.loc[(df["k"] == 8) & (df["seed"] == 1), ["correct", "visible_correct"]] = [9700, 9700]
    df.loc[(df["k"] == 8) & (df["seed"] == 2), ["correct", "visible_correct"]] = [9900, 9900]
    m, gate, _, _ = measure_ceiling(df, 8, 16)
    assert m.value == pytest.approx(0.03) and m.ci_high == pytest.approx(0.03)
    assert m.ci_low == pytest.approx(0.0, abs=1e-3)  # seed 0 at the ceiling everywhere


def test_grid_does_not_depend_on_the_number_of_worker_processes():
    from papers.inverse_permutation.experiment import run_grid

    kw = dict(n=4, n_symbols=5, scratch_tokens=[0, 4], architectures=["disentangled"], depth=1, seeds=[0, 1],
              steps=6, batch_size=8, lr={"disentangled": 0.01}, n_eval=100, device="cpu", progress=False)
    rows1, curves1 = run_grid(**kw, workers=1)
    rows2, curves2 = run_grid(**kw, workers=2)
    pd.testing.assert_frame_equal(rows1, rows2)
    pd.testing.assert_frame_equal(curves1, curves2)
    assert len(rows1) == 3 * 2  # (bidirectional k=0, causal k=0, causal k=4) x 2 seeds

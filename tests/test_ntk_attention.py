"""papers.ntk_attention: the NTK-Attention formula, the prefix-attention target, the Part 1 fit, the SST-2
subsets, the MiniLM wrapper and the claims' measure_* functions against hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from papers.ntk_attention.analysis import (error_slopes, measure_error_slope, measure_ntk_vs_head,
                                           measure_ntk_vs_prefix, paired_differences)
from papers.ntk_attention.method import (blind_phi, fit_prefix_approx, log_slope, ntk_attention,
                                         ntk_param_count, ntk_params_from_prefix, phi, prefix_attention,
                                         relative_error, synthetic_problem)
from papers.ntk_attention.sst2 import balanced_indices
from shared.textdata import read_labelled
from shared.claims import load_claims


def test_phi_hand_values():
    d4 = 4 ** 0.25  # d = 4: phi(x) = elu(x / 4^{1/4}) + 1
    x = torch.tensor([[0.0, 2.0 * d4, -math.log(2.0) * d4, 1.0 * d4]])
    assert torch.allclose(phi(x), torch.tensor([[1.0, 3.0, 0.5, 2.0]]), atol=1e-6)  # elu(-ln2) = 1/2 - 1
    assert torch.all(blind_phi(x) == 1)


def test_ntk_attention_hand_case_one_key():
    # one query, one key with score 0, value 2; Z = 3 (d = 1), k = -1 (|k| = 1): phi(0) = 1, M = 0
    # out = (e^0 * 2 + 1 * 3) / (e^0 + 1 * 1) = 5 / 2
    q = torch.zeros(1, 1, 1, 1)
    k = torch.zeros(1, 1, 1, 1)
    v = torch.full((1, 1, 1, 1), 2.0)
    out = ntk_attention(q, k, v, torch.full((1, 1, 1), 3.0), torch.full((1, 1), -1.0))
    assert out.item() == pytest.approx(2.5)


def test_ntk_with_zero_params_is_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    out = ntk_attention(q, k, v, torch.zeros(3, 8, 8), torch.zeros(3, 8))
    ref = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    assert torch.allclose(out, ref, atol=1e-6)


def test_ntk_equals_kernelised_prefix_attention():
    """With Z = sum phi(k_p) v_p^T and k = sum phi(k_p), NTK-Attention is attention over [prefix; input]
    whose prefix weights are phi(q).phi(k_p) instead of exp(q.k_p / sqrt d): independent of m at run time."""
    g = torch.Generator().manual_seed(1)
    d, m = 6, 7
    q, k, v = (torch.randn(1, 1, 4, d, generator=g) for _ in range(3))
    kp, vp = torch.randn(m, d, generator=g), torch.randn(m, d, generator=g)
    Z, kv = ntk_params_from_prefix(kp, vp)
    out = ntk_attention(q, k, v, Z.unsqueeze(0), kv.unsqueeze(0))
    w_x = torch.exp(q @ k.transpose(-1, -2) / math.sqrt(d))  # (1,1,4,4)
    w_p = phi(q) @ phi(kp).T  # (1,1,4,m)
    ref = (w_x @ v + w_p @ vp) / (w_x.sum(-1, keepdim=True) + w_p.sum(-1, keepdim=True))
    assert torch.allclose(out, ref, atol=1e-5)


def test_padding_mask_hits_softmax_scores_only():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 3, 4, generator=g) for _ in range(3))
    Z, kv = torch.randn(1, 4, 4, generator=g), torch.randn(1, 4, generator=g)
    mask = torch.tensor([0.0, 0.0, -1e9]).view(1, 1, 1, 3)
    masked = ntk_attention(q, k, v, Z, kv, mask=mask)
    dropped = ntk_attention(q, k[..., :2, :], v[..., :2, :], Z, kv)  # the padded key removed
    assert torch.allclose(masked, dropped, atol=1e-5)


def test_prefix_attention_matches_concatenated_softmax():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 1, 3, 4, generator=g) for _ in range(3))
    kp, vp = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    kk = torch.cat([kp.expand(2, 1, 5, 4), k], -2)
    vv = torch.cat([vp.expand(2, 1, 5, 4), v], -2)
    ref = torch.softmax(q @ kk.transpose(-1, -2) / 2.0, -1) @ vv
    assert torch.allclose(prefix_attention(q, k, v, kp, vp), ref, atol=1e-6)


def test_relative_error_and_log_slope_hand_values():
    t = torch.zeros(4)
    assert relative_error(torch.full((4,), 1.0), t, torch.full((4,), 2.0)) == pytest.approx(0.25)
    # err halves per doubling of m -> slope ln(1/2)
    assert log_slope(np.array([2, 4, 8]), np.array([1.0, 0.5, 0.25])) == pytest.approx(math.log(0.5))
    assert log_slope(np.array([2, 4, 8]), np.array([0.3, 0.3, 0.3])) == pytest.approx(0.0)


def test_synthetic_problem_is_seeded_and_nested():
    a, b = synthetic_problem(8, 16, 5), synthetic_problem(8, 16, 5)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["P"], synthetic_problem(8, 16, 6)["P"])


def test_fit_reduces_error_in_a_few_steps():
    prob = synthetic_problem(8, 16, 0)
    r = fit_prefix_approx(prob, 16, steps=40, batch=4, L=8, lr=0.05, seed=0, n_eval=8)
    assert 0 < r["rel_error"] < r["rel_error_init"] <= 1.5
    assert 0 < r["prefix_mass"] < 1


def test_read_labelled_and_balanced_indices(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("1\tgood film \n0\tbad\n\n1\tfine\n0\tawful\n")
    texts, labels = read_labelled(f)
    assert texts == ["good film", "bad", "fine", "awful"] and labels.tolist() == [1, 0, 1, 0]
    idx = balanced_indices(labels, 2, seed=0)
    assert sorted(labels[idx].tolist()) == [0, 1]
    assert np.array_equal(idx, balanced_indices(labels, 2, seed=0))
    rest = balanced_indices(labels, 2, seed=1, exclude=idx)
    assert not set(idx) & set(rest)
    with pytest.raises(ValueError):
        balanced_indices(labels, 3, seed=0)
    with pytest.raises(ValueError):
        balanced_indices(labels, 6, seed=0)


def test_ntk_param_count_minilm():
    assert ntk_param_count(6, 12, 32) == 6 * 12 * (32 * 32 + 32) == 76032


def test_ntk_wrapper_starts_at_the_pretrained_function():
    from papers.ntk_attention.method import NTKSelfAttention
    from shared.encoder import SelfAttentionWrapper

    class Layer(torch.nn.Module):  # the attributes SelfAttentionWrapper reads from a BERT layer
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (torch.nn.Linear(8, 8) for _ in range(3))
            self.num_attention_heads, self.attention_head_size = 2, 4
            self.dropout = torch.nn.Dropout(0.0)

    torch.manual_seed(0)
    layer = Layer()
    x = torch.randn(2, 5, 8)
    mask = torch.zeros(2, 1, 5, 5)
    mask[1, ..., 3:] = -1e9
    base = SelfAttentionWrapper(layer).eval()(x, mask)[0]
    ntk = NTKSelfAttention(layer, init_scale=0.0).eval()
    assert torch.allclose(ntk(x, mask)[0], base, atol=1e-5)
    assert ntk.Z.shape == (2, 4, 4) and ntk.kvec.shape == (2, 4)
    ntk.Z.data.fill_(1.0)
    ntk.kvec.data.fill_(1.0)
    assert not torch.allclose(ntk(x, mask)[0], base, atol=1e-3)


# ----- measure_* on synthetic tables ---------------------------------------------------------------

def _curves(ntk_err, blind_err, init=1.0, seeds=(0, 1, 2), ms=(4, 16, 64)):
    rows = []
    for s in seeds:
        for i, m in enumerate(ms):
            rows.append({"seed": s, "arm": "ntk", "m": m, "rel_error": ntk_err(s, i), "rel_error_init": init})
            rows.append({"seed": s, "arm": "blind", "m": m, "rel_error": blind_err(s, i), "rel_error_init": init})
    return pd.DataFrame(rows)


def test_measure_error_slope_reproduced_with_flat_control():
    # ntk error halves (x 1/4 per two doublings) -> slope ln(1/2) per doubling, + seed jitter
    curves = _curves(lambda s, i: 0.4 * 0.25 ** i * (1 + 0.01 * s), lambda s, i: 0.5 + 0.01 * s)
    measured, gate, control = measure_error_slope(curves)
    assert measured.value == pytest.approx(math.log(0.5))
    assert gate.passed and gate.value == pytest.approx(0.408)  # seed 2 at m = 4: 0.4 * 1.02 / 1
    assert control.measured.value == pytest.approx(0.0)
    claim = load_claims("ntk_attention")["ntk_error_decreases_with_m"]
    claim.evaluate(measured, gate=gate, control=control)
    assert claim.verdict == "reproduced"


def test_measure_error_slope_failed_gate_and_passing_control():
    # fit did not move from its init at m index 2 -> ratio 1 -> gate fails
    curves = _curves(lambda s, i: [0.4, 0.1, 1.0][i], lambda s, i: 0.4 * 0.25 ** i + 0.001 * s)
    measured, gate, control = measure_error_slope(curves)
    assert not gate.passed and gate.value == pytest.approx(1.0)
    claim = load_claims("ntk_attention")["ntk_error_decreases_with_m"]
    claim.evaluate(measured, gate=gate, control=control)
    assert claim.verdict == "inconclusive"
    # gate passes but the blind control decreases just as fast: the criterion does not discriminate
    curves = _curves(lambda s, i: 0.4 * 0.25 ** i + 0.001 * s, lambda s, i: 0.4 * 0.25 ** i + 0.002 * s)
    measured, gate, control = measure_error_slope(curves)
    claim = load_claims("ntk_attention")["ntk_error_decreases_with_m"]
    claim.evaluate(measured, gate=gate, control=control)
    assert gate.passed and claim.verdict == "inconclusive" and "discriminate" in claim.reason


def _acc(values):
    rows = [{"arm": a, "seed": s, "accuracy": v[s], "diverged": False}
            for a, v in values.items() for s in range(len(v))]
    return pd.DataFrame(rows)


def test_measure_ntk_vs_prefix_hand_values():
    t = _acc({"prefix": [0.80, 0.82, 0.84], "ntk": [0.81, 0.83, 0.85], "head": [0.70, 0.71, 0.72]})
    assert paired_differences(t, "ntk", "prefix").tolist() == pytest.approx([0.01, 0.01, 0.01])
    measured, gate, control = measure_ntk_vs_prefix(t, 0.75)
    assert measured.value == pytest.approx(0.01) and gate.passed and gate.value == pytest.approx(0.80)
    assert control.measured.value == pytest.approx(-0.11)
    claim = load_claims("ntk_attention")["ntk_noninferior_to_ptuning"]
    claim.evaluate(measured, gate=gate, control=control)
    assert claim.verdict == "reproduced"
    # the reference below the gate level -> inconclusive
    measured, gate, control = measure_ntk_vs_prefix(t, 0.81)
    assert not gate.passed
    # a linear probe as good as P-Tuning v2 -> the control meets the criterion -> inconclusive
    t2 = _acc({"prefix": [0.80, 0.82, 0.84], "ntk": [0.81, 0.83, 0.85], "head": [0.80, 0.821, 0.84]})
    claim = load_claims("ntk_attention")["ntk_noninferior_to_ptuning"]
    claim.evaluate(*measure_ntk_vs_prefix(t2, 0.75)[:1], gate=measure_ntk_vs_prefix(t2, 0.75)[1],
                   control=measure_ntk_vs_prefix(t2, 0.75)[2])
    assert claim.verdict == "inconclusive"


def test_measure_ntk_vs_head_not_reproduced_and_divergence():
    t = _acc({"head": [0.80, 0.80, 0.80], "ntk": [0.78, 0.77, 0.79], "ntk_frozen": [0.80, 0.79, 0.80]})
    measured, gate, control = measure_ntk_vs_head(t, 0.7)
    assert measured.value == pytest.approx(-0.02) and gate.passed
    claim = load_claims("ntk_attention")["ntk_beats_linear_probe"]
    claim.evaluate(measured, gate=gate, control=control)
    assert claim.verdict == "not_reproduced"
    t.loc[(t["arm"] == "ntk") & (t["seed"] == 1), "diverged"] = True
    _, gate, _ = measure_ntk_vs_head(t, 0.7)
    assert not gate.passed and "ntk seed 1" in gate.detail


def test_error_slopes_per_seed():
    curves = _curves(lambda s, i: 2.0 ** (-(s + 1) * 2 * i), lambda s, i: 1.0)
    assert error_slopes(curves, "ntk").tolist() == pytest.approx([-math.log(2), -2 * math.log(2), -3 * math.log(2)])

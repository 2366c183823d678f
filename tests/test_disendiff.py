"""papers.disendiff: world generators, calibration losses, metrics and measure_* functions on hand-checked cases."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.disendiff.method import (calibration_losses, gaussian_smooth, leakage, measure_calibration_manipulation,
                                     measure_leakage_reduction, measure_mask_iou_gain, measure_overlap_reduction,
                                     normalise, personalise, soft_iou)
from papers.disendiff.world import (AND, BOS, COLOUR_ID, COLOURS, NEW1, NEW2, NOVEL_COLOURS, PAD, SHAPE_ID, TinyT2I,
                                    concept_pair, generic_batch, shape_masks, texture)


def test_shape_masks_areas_and_position():
    m = shape_masks(torch.tensor([0, 1, 2]), torch.tensor([8.0, 8.0, 8.0]), torch.tensor([8.0, 8.0, 8.0]))
    assert m[1].sum() == 36  # |dy|, |dx| <= 3 around a pixel-corner centre: 6 x 6 pixels
    assert 28 <= m[0].sum() <= 36  # circle of radius 3.2: area ~ 32
    assert m[0, 7, 7] == 1 and m[0, 0, 0] == 0
    assert m[2, 5, 7] == 1 and m[2, 5, 3] == 0 and m[2, 11, 4] == 1  # triangle apex at the top, wide at the bottom


def test_generic_batch_captions_match_masks():
    x, tok, masks = generic_batch(np.random.default_rng(0), 50)
    assert x.shape == (50, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    single = tok[:, 3] == PAD
    assert (masks[single, 1].sum((1, 2)) == 0).all()
    assert (masks[~single, 1].sum((1, 2)) > 0).all() and (tok[~single, 3] == AND).all()
    assert ((masks[:, 0] * masks[:, 1]).sum() == 0)  # objects never overlap
    assert (tok[:, 0] == BOS).all()
    # [BOS, shape, colour, and, shape, colour]: the two shapes differ; the colour word names the object's colour
    assert (tok[~single, 1] != tok[~single, 4]).all() and set(tok[:, 1].tolist()) <= set(SHAPE_ID.values())
    img = (x + 1) / 2
    colour_rgb = {COLOUR_ID[c]: torch.tensor(v) for c, v in COLOURS.items()}
    for i in range(5):
        pix = img[i][:, masks[i, 0] > 0].T
        assert torch.allclose(pix, colour_rgb[int(tok[i, 2])].expand_as(pix))


def test_concept_pair_caption_palettes_and_pixels():
    p = concept_pair(np.random.default_rng(3))
    tok = p["tokens"].tolist()
    assert tok[:2] == [BOS, NEW1] and tok[3] == AND and tok[4] == NEW2
    assert tok[2] in COLOUR_ID.values() and tok[5] in COLOUR_ID.values() and tok[2] != tok[5]
    assert p["palettes"][0] != p["palettes"][1] and all(len(pal) == 1 for pal in p["palettes"])
    assert p["palettes"][0][0] in NOVEL_COLOURS.values()
    # inside object 1 only its base (class) colour and its novel colour appear, about half each
    base = {v: k for k, v in COLOUR_ID.items()}[tok[2]]
    pix = ((p["x"] + 1) / 2)[:, p["masks"][0] > 0].T
    allowed = torch.tensor([COLOURS[base], p["palettes"][0][0]])
    d = torch.cdist(pix, allowed)
    assert d.min(1).values.max() < 1e-5
    assert 0.25 < float((d.argmin(1) == 1).float().mean()) < 0.75
    assert float((p["masks"][0] * p["masks"][1]).sum()) == 0


def test_texture_checker():
    t = texture("checker", (1, 0, 0), (0, 0, 1), 4)
    assert t[:, 0, 0].tolist() == [1, 0, 0] and t[:, 0, 2].tolist() == [0, 0, 1] and t[:, 2, 2].tolist() == [1, 0, 0]


def test_soft_iou_hand_values():
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(soft_iou(a, b)) == pytest.approx(1 / 3)
    assert float(soft_iou(a, a)) == pytest.approx(1.0)
    c = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    assert float(soft_iou(c, a)) == pytest.approx(1.0 / 2.0)  # sum(ab)=1, sum(a+b-ab)=2


def test_normalise_range_and_smoothing_preserves_constant():
    m = torch.rand(2, 3, 5, 5)
    n = normalise(m)
    assert n.min() >= 0 and n.max() <= 1 + 1e-6
    assert torch.allclose(gaussian_smooth(torch.ones(1, 4, 4)), torch.ones(1, 4, 4))


def test_calibration_losses_hand_cases():
    H = 8
    left = torch.zeros(H, H)
    left[:, :4] = 1
    right = 1 - left
    maps = torch.zeros(1, 6, H, H)
    maps[0, 1], maps[0, 2], maps[0, 4], maps[0, 5] = left, left, right, right  # modifiers on their classes
    l_bind, l_sup = calibration_losses(maps)
    maps_bad = maps.clone()
    maps_bad[0, 1], maps_bad[0, 4] = right, left  # modifiers swapped
    l_bind_bad, _ = calibration_losses(maps_bad)
    assert float(l_bind) < 0.2 and float(l_bind_bad) > 0.8
    assert float(l_sup) < 0.2
    maps_same = maps.clone()
    maps_same[0, 5] = left
    assert float(calibration_losses(maps_same)[1]) > 0.8
    # the class map is detached in L_bind: its gradient comes from L_sup only
    m = maps.clone().requires_grad_(True)
    calibration_losses(m)[0].backward()
    assert m.grad[0, 2].abs().sum() == 0 and m.grad[0, 1].abs().sum() > 0


def test_leakage_hand_case():
    own, other = [(1.0, 0.55, 0.0)], [(0.5, 0.0, 0.8)]
    img = torch.zeros(1, 3, 2, 2)  # black background in [0, 1]
    img[0, :, 0, 0] = torch.tensor(own[0])
    img[0, :, 0, 1] = torch.tensor(own[0])
    img[0, :, 1, 0] = torch.tensor(other[0])
    lk, share, fg = leakage(img * 2 - 1, own, other)
    assert lk == pytest.approx(1 / 3) and share == pytest.approx(1.0) and fg == pytest.approx(0.75)
    lk2, _, _ = leakage(torch.full((1, 3, 2, 2), -1.0), own, other)
    assert np.isnan(lk2)
    # a noise-like pixel far from every palette colour is foreground but unassigned
    img[0, :, 1, 1] = torch.tensor([0.75, 0.3, 0.4])  # nearest is orange at distance ~0.5 > 0.2
    lk3, share3, fg3 = leakage(img * 2 - 1, own, other)
    assert lk3 == pytest.approx(1 / 3) and share3 == pytest.approx(3 / 4) and fg3 == pytest.approx(1.0)


def test_model_maps_shape_and_sum():
    m = TinyT2I(width=8)
    x, tok, _ = generic_batch(np.random.default_rng(1), 3)
    out = m(x, torch.tensor([1, 5, 9]), tok)
    assert out.shape == x.shape
    maps = m.token_maps()
    assert maps.shape == (3, 6, 16, 16)
    assert torch.allclose(maps.sum(1), torch.ones(3, 16, 16), atol=1e-5)  # softmax over tokens
    assert torch.allclose(maps[tok == PAD], torch.zeros_like(maps[tok == PAD]))  # padding gets no attention


def test_text_encoder_is_causal():
    torch.manual_seed(0)
    m = TinyT2I(width=8)
    a = torch.tensor([[BOS, NEW1, 5, AND, NEW2, 6]])
    b = torch.tensor([[BOS, NEW1, 5, AND, NEW2, 7]])
    ea, eb = m.encode(a)[0], m.encode(b)[0]
    assert torch.allclose(ea[0, :5], eb[0, :5]) and not torch.allclose(ea[0, 5], eb[0, 5])
    bi = TinyT2I(width=8, text_encoder="bidirectional")
    assert not torch.allclose(bi.encode(a)[0][0, 0], bi.encode(b)[0][0, 0])
    with pytest.raises(ValueError):
        TinyT2I(width=8, text_encoder="lstm")


def test_personalise_trains_only_kv_and_new_tokens():
    base = TinyT2I(width=8)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    pair = concept_pair(np.random.default_rng(0))
    model, curve = personalise(state, pair, seed=0, calibrate=True, steps=2, lr=1e-2, alpha=0.1, n_target=2,
                               n_prior=2, width=8)
    new = model.state_dict()
    changed = {k for k in state if not torch.equal(state[k], new[k])}
    assert "new_emb" in changed and any(k.endswith("to_k.weight") for k in changed)
    assert all(k == "new_emb" or k.endswith(("to_k.weight", "to_v.weight")) for k in changed)
    assert {"l_bind", "l_sup", "target", "prior"} <= set(curve.columns)


def _rows(gain, aa_gain, fit=0.5, share=0.4, seeds=(0, 1, 2), pairs=(0, 1), swap_gain=0.0):
    recs = []
    rng = np.random.default_rng(0)
    for s in seeds:
        for p in pairs:
            for arm, g, sg in (("baseline", 0.0, 0.0), ("method", gain, swap_gain), ("baseline_aa", aa_gain, 0.0)):
                jit = float(rng.normal(0, 0.005))
                recs.append({"seed": s, "pair": p, "arm": arm, "mod_iou": 0.3 + g + jit, "mod_iou_swap": 0.1 + sg + jit,
                             "overlap": 0.4 - g + jit,
                             "leakage": 0.4 - g + jit, "cal_loss": 1.0 - g + jit, "concept_share": share,
                             "target_loss": 1.0 - fit, "target_loss_before": 1.0})
    return pd.DataFrame(recs)


def test_measure_mask_iou_gain_values_gate_control():
    m, g, c = measure_mask_iou_gain(_rows(0.2, 0.0), base_class_iou=0.5)
    assert m.value == pytest.approx(0.2, abs=0.01) and m.ci_low > 0.05 and g.passed
    assert abs(c.measured.value) < 0.02 and c.measured.ci_low < 0.05
    # failed gates: class tokens do not localise, or the image was not fit
    assert not measure_mask_iou_gain(_rows(0.2, 0.0), base_class_iou=0.1)[1].passed
    assert not measure_mask_iou_gain(_rows(0.2, 0.0, fit=0.05), base_class_iou=0.5)[1].passed
    # a control that meets the criterion (the maps gain as much on the WRONG object): it would not discriminate
    _, _, c2 = measure_mask_iou_gain(_rows(0.2, 0.0, swap_gain=0.2), base_class_iou=0.5)
    assert c2.measured.ci_low > 0.05 and c2.measured.value == pytest.approx(0.2, abs=0.01)


def test_measure_overlap_and_leakage_and_manipulation():
    m, g, c = measure_overlap_reduction(_rows(0.2, 0.0), base_class_iou=0.5)
    assert m.value == pytest.approx(-0.2, abs=0.01) and m.ci_high < -0.05 and g.passed
    m, g, c = measure_leakage_reduction(_rows(0.2, 0.0))
    assert m.value == pytest.approx(-0.2, abs=0.01) and g.passed and c.measured.ci_high > -0.05
    assert not measure_leakage_reduction(_rows(0.2, 0.0, share=0.1))[1].passed
    _, _, c2 = measure_leakage_reduction(_rows(0.2, 0.2))  # A/A shows the same reduction: control meets it
    assert c2.measured.ci_high < -0.05
    rows = _rows(0.2, 0.0)
    rows.loc[0, "leakage"] = np.nan
    assert not measure_leakage_reduction(rows)[1].passed
    m, g, c = measure_calibration_manipulation(_rows(0.2, 0.0))
    assert g is None and m.ci_high < -0.02 and c.measured.ci_high > -0.02


def test_measure_verdict_through_registry():
    from shared.claims import load_claims

    claims = load_claims("disendiff")
    m, g, c = measure_mask_iou_gain(_rows(0.2, 0.0), base_class_iou=0.5)
    claims["attention_mask_iou_gain"].evaluate(m, gate=g, control=c)
    assert claims["attention_mask_iou_gain"].verdict == "reproduced"
    m, g, c = measure_mask_iou_gain(_rows(-0.2, 0.0), base_class_iou=0.5)  # the method hurts: not reproduced
    claims["attention_mask_iou_gain"].evaluate(m, gate=g, control=c)
    assert claims["attention_mask_iou_gain"].verdict == "not_reproduced"
    m, g, c = measure_mask_iou_gain(_rows(0.2, 0.0), base_class_iou=0.1)
    claims["attention_mask_iou_gain"].evaluate(m, gate=g, control=c)
    assert claims["attention_mask_iou_gain"].verdict == "inconclusive"
    m, g, c = measure_mask_iou_gain(_rows(0.2, 0.0, swap_gain=0.2), base_class_iou=0.5)  # control meets it
    claims["attention_mask_iou_gain"].evaluate(m, gate=g, control=c)
    assert claims["attention_mask_iou_gain"].verdict == "inconclusive"

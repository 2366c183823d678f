"""papers.homomorphism_error: generator, batching, HE triples and operators, regulariser, verdict rules."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.homomorphism_error.analysis import (GATE_ACC, evaluate_he_predicts_ood, evaluate_he_reg,
                                                evaluate_noise_raises_he, polynomial_r2)
from papers.homomorphism_error.experiment import (ID_SEED_OFFSET, Settings, aligned_cross_entropy, build_model,
                                                  PositionMajority, cell_list, held_out_id_set,
                                                  mine_modifier_pool,
                                                  sinusoidal_positions, token_accuracy, train_cell,
                                                  untrained_he)
from papers.homomorphism_error.homomorphism import (ModifierHERegularizer, Operator, Triples,
                                                    homomorphism_error, modifier_triples, normalised_he,
                                                    segment_ids, sequence_triples)
from shared.claims import load_claims
from papers.homomorphism_error.task import (MODIFIER_IDS, PRIMITIVE_IDS, TOKEN_ID, VOCAB, EpochBatches,
                                            encode, encode_set, generate_dataset, generate_expression,
                                            generate_output, interpret, parse_scan_line, scan_fragment)


# --- the command language ---------------------------------------------------------------------------------

def test_generate_output_hand_cases():
    assert generate_output(["walk", "jump"], ["twice", None]) == ["WALK", "WALK", "JUMP"]
    assert generate_output(["look"], ["thrice"]) == ["LOOK"] * 3
    rng = np.random.default_rng(0)
    assert generate_expression(["walk", "jump"], ["twice", None], 0, rng) == ["walk", "twice", "then", "jump"]


def test_noise_is_inserted_and_meaningless():
    rng = np.random.default_rng(1)
    expr = generate_expression(["turn", "look"], [None, "thrice"], 5, rng)
    assert len(expr) == 4 + 5
    assert sum(t in ("foo", "bar", "baz") for t in expr) == 5
    assert [t for t in expr if t not in ("foo", "bar", "baz")] == ["turn", "then", "look", "thrice"]


def test_dataset_is_distinct_deterministic_and_consistent():
    data = generate_dataset(2, 3, 300, seed=7)
    assert data == generate_dataset(2, 3, 300, seed=7)
    assert len(data) == 300 and len({(tuple(x), tuple(y)) for x, y in data}) == 300
    for x, y in data:
        assert interpret(x) == y
        assert x.count("then") == 1


def test_noise_free_two_clause_set_has_only_144_examples():
    # (4 primitives x 3 modifier choices)^2 distinct expressions: the noise-0 training set is small
    assert len(generate_dataset(2, 0, 1000, seed=0)) == 144


def test_vocab_and_encoding():
    assert VOCAB[0] == "<pad>" and len(VOCAB) == len(set(VOCAB)) == 15
    assert encode(["walk", "then"]) == [TOKEN_ID["walk"], TOKEN_ID["then"]]
    with pytest.raises(ValueError, match="run"):
        encode(["run"])


def test_batches_repad_and_cover_each_epoch_once():
    data = encode_set([(["walk"], ["WALK"]), (["jump", "twice", "then", "look"], ["JUMP", "JUMP", "LOOK"]),
                       (["look", "thrice"], ["LOOK"] * 3)])
    assert data.inputs.shape == (3, 4) and data.input_lengths.tolist() == [1, 4, 2]
    x, y = data.batch(torch.tensor([0, 2]))
    assert x.shape == (2, 2) and y.shape == (2, 3)  # re-padded to the batch's own lengths
    eb = EpochBatches(data, 2, seed=0)
    assert eb.per_epoch == 2 and eb.steps(3) == 6
    seen = torch.cat([eb(0)[0][:, 0], eb(1)[0][:, 0]])
    assert sorted(seen.tolist()) == sorted(data.inputs[:, 0].tolist())


def test_scan_parsing_and_fragment():
    assert parse_scan_line("IN: walk twice and jump OUT: I_WALK I_WALK I_JUMP\n") == (
        ["walk", "twice", "and", "jump"], ["I_WALK", "I_WALK", "I_JUMP"])
    lines = ["IN: walk twice and jump OUT: I_WALK I_WALK I_JUMP", "IN: run OUT: I_RUN",
             "IN: turn left OUT: I_TURN_LEFT", "IN: look after walk OUT: I_WALK I_LOOK",
             "IN: walk twice and jump OUT: I_WALK I_WALK I_JUMP"]
    assert scan_fragment(lines) == [(["walk", "twice", "then", "jump"], ["WALK", "WALK", "JUMP"])]
    with pytest.raises(ValueError):
        parse_scan_line("walk => WALK")


# --- position-aligned loss and accuracy -------------------------------------------------------------------

def test_aligned_cross_entropy_ignores_pad_and_truncates():
    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 1] = 10.0  # position 0 predicts 1 (right); position 1 is uniform
    targets = torch.tensor([[1, 2, 3]])  # third target is beyond the input: truncated
    expected = (torch.nn.functional.cross_entropy(logits[0], torch.tensor([1, 2])))
    assert aligned_cross_entropy(logits, targets).item() == pytest.approx(expected.item())
    padded = torch.tensor([[1, 0, 0]])
    assert aligned_cross_entropy(logits, padded).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[0, :1], torch.tensor([1])).item())


class _Oracle(torch.nn.Module):
    """Predicts the upper-case version of each input token: right exactly where output t = input t."""

    def forward(self, x, return_hidden=False):
        upper = {TOKEN_ID[p]: TOKEN_ID[p.upper()] for p in ("walk", "jump", "look", "turn")}
        pred = x.clone().apply_(lambda t: upper.get(t, 0))
        from shared.transformer import TransformerOutput
        return TransformerOutput(torch.nn.functional.one_hot(pred, len(VOCAB)).float())


def test_token_accuracy_hand_case():
    # "walk then jump" -> WALK JUMP: position 0 right, position 1 ("then") predicts pad: wrong -> 1/2
    # "look twice" -> LOOK LOOK (aligned length 2): position 0 right, position 1 ("twice") wrong -> 1/2
    data = encode_set([(["walk", "then", "jump"], ["WALK", "JUMP"]), (["look", "twice"], ["LOOK", "LOOK"])])
    assert token_accuracy(_Oracle(), data) == pytest.approx(2 / 4)


# --- HE triples -------------------------------------------------------------------------------------------

def _ids(tokens_rows):
    data = encode_set([(row, ["WALK"]) for row in tokens_rows])
    return data.inputs, data.input_lengths


def test_modifier_triples_pick_primitive_modifier_bigrams():
    ids, lengths = _ids([["walk", "twice", "then", "jump"], ["foo", "look", "bar", "thrice", "then", "turn", "thrice"]])
    states = torch.arange(ids.numel() * 2, dtype=torch.float32).reshape(*ids.shape, 2)
    t = modifier_triples(states, ids, lengths, PRIMITIVE_IDS, MODIFIER_IDS)
    # row 0: (0,1); row 1: look-bar-thrice is split by noise, so only turn thrice at (5,6)
    assert len(t) == 2
    assert torch.equal(t.a, torch.stack([states[0, 0], states[1, 5]]))
    assert torch.equal(t.b, torch.stack([states[0, 1], states[1, 6]]))
    assert torch.equal(t.c, (t.a + t.b) / 2)


def test_segments_and_sequence_triples():
    ids, lengths = _ids([["foo", "walk", "twice", "then", "jump"], ["look", "then", "turn", "bar"]])
    assert segment_ids(ids, lengths, PRIMITIVE_IDS).tolist() == [[0, 1, 1, 1, 2], [0, 0, 1, 1, -1]]
    states = torch.randn(*ids.shape, 3)
    t = sequence_triples(states, ids, lengths, PRIMITIVE_IDS)
    assert len(t) == 3  # row 0: (foo | walk twice then), (walk twice then | jump); row 1: (look then | turn bar)
    e = [states[0, 0], states[0, 1:4].mean(0), states[0, 4], states[1, 0:2].mean(0), states[1, 2:4].mean(0)]
    assert torch.allclose(t.a, torch.stack([e[0], e[1], e[3]]))
    assert torch.allclose(t.b, torch.stack([e[1], e[2], e[4]]))
    assert torch.allclose(t.c, (t.a + t.b) / 2)


def test_operator_shapes_and_bilinear_features():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    for kind in ("linear", "bilinear", "mlp"):
        assert Operator(kind, 4)(a, b).shape == (5, 4)
    op = Operator("bilinear", 4)
    assert op.net.in_features == 12
    with pytest.raises(ValueError):
        Operator("cubic", 4)


def test_homomorphism_error_small_for_linear_composite_and_normalisation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(320, 8, generator=g), torch.randn(320, 8, generator=g)
    res = homomorphism_error(Triples(a, b, (a + b) / 2), seed=0, kinds=("linear",), epochs=80, lr=1e-2)
    assert res.n_triples == 320 and res.target_variance == pytest.approx(0.5, rel=0.2)
    assert res.he < 0.01 * res.target_variance  # the mean composite is exactly linear: learnable
    short = homomorphism_error(Triples(a, b, (a + b) / 2), seed=0, kinds=("linear",), epochs=3, lr=1e-2)
    assert short.he > 5 * res.he  # ...but HE also measures the operator's training budget
    unrelated = homomorphism_error(Triples(a, b, torch.randn(320, 8, generator=g)), seed=0,
                                   kinds=("linear",), epochs=80, lr=1e-2)
    assert unrelated.normalised > 0.9  # an unpredictable composite: no better than its variance
    assert normalised_he(0.2, 0.5) == pytest.approx(0.4)


def test_regulariser_matches_formula():
    torch.manual_seed(0)
    reg = ModifierHERegularizer(4, MODIFIER_IDS, hidden=8)
    h = torch.randn(3, 5, 4)
    prim, mod_id = torch.tensor([0, 1, 2]), torch.tensor([MODIFIER_IDS[0], MODIFIER_IDS[1], MODIFIER_IDS[0]])
    loss = reg([h], prim, prim + 1, mod_id)
    terms = []
    for m in MODIFIER_IDS:
        sel = (mod_id == m).nonzero().flatten()
        pv, mv = h[sel, prim[sel]], h[sel, prim[sel] + 1]
        pred = reg.ops[str(m)](torch.cat([pv, mv], -1))
        terms.append(((pred - (pv + mv) / 2) ** 2).mean())
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)
    loss.backward()  # the gradient reaches the states through the target too
    assert reg.ops[str(MODIFIER_IDS[0])][0].weight.grad is not None


def test_modifier_pool_and_model_shapes():
    data = encode_set(generate_dataset(2, 2, 50, seed=3))
    pool = mine_modifier_pool(data, 10)
    assert 0 < len(pool) <= 10
    assert all(data.inputs[r, p].item() in PRIMITIVE_IDS for r, p in zip(pool.rows, pool.prim_pos))
    assert torch.equal(pool.mod_id, data.inputs[pool.rows, pool.prim_pos + 1])
    s = Settings(d_model=16, n_layers=2, n_heads=2, d_ff=32)
    model = build_model(s).eval()
    out = model(data.inputs[:4], return_hidden=True)
    assert out.logits.shape == (4, data.inputs.shape[1], len(VOCAB)) and len(out.hidden_states) == 3
    pe = sinusoidal_positions(10, 16)
    assert pe[0, 0] == 0 and pe[0, 1] == 1 and pe[3, 0] == pytest.approx(np.sin(3.0))


def test_causal_model_ignores_later_tokens():
    torch.manual_seed(0)
    model = build_model(Settings(d_model=16, n_layers=2, n_heads=2, d_ff=32)).eval()
    x = torch.tensor([[TOKEN_ID["walk"], TOKEN_ID["twice"], TOKEN_ID["then"], TOKEN_ID["jump"]]])
    y = x.clone()
    y[0, 3] = TOKEN_ID["look"]
    with torch.no_grad():
        assert torch.allclose(model(x).logits[:, :3], model(y).logits[:, :3], atol=1e-6)


def test_cell_list():
    assert cell_list([0], [0, 3], [3]) == [(0, 0, "baseline"), (0, 3, "baseline"), (0, 3, "he_reg"),
                                           (0, 3, "he_reg_sham")]


def test_held_out_set_and_untrained_he():
    s = Settings(d_model=16, n_layers=2, n_heads=2, d_ff=32, probe_epochs=2, train_samples=50)
    held = held_out_id_set(s, 3, seed=0)
    train = encode_set(generate_dataset(2, 3, 50, 0))
    assert len(held) == 500 and held.inputs.shape[0] == 500
    assert generate_dataset(2, 3, 500, ID_SEED_OFFSET) != generate_dataset(2, 3, 500, 0)
    he = untrained_he(train, 0, s)
    assert set(he) == {"init_mod_he", "init_mod_he_norm", "init_seq_he", "init_seq_he_norm"}
    assert he == untrained_he(train, 0, s)  # seeded
    assert all(np.isfinite(v) and v >= 0 for v in he.values())


def test_position_majority_baseline():
    train = encode_set([(["walk"], ["WALK"]), (["walk"], ["WALK"]), (["jump", "twice"], ["JUMP", "JUMP"])])
    maj = PositionMajority(train)
    assert maj.tok[0] == TOKEN_ID["WALK"] and maj.tok[1] == TOKEN_ID["JUMP"]
    test = encode_set([(["look", "twice"], ["LOOK", "LOOK"]), (["walk", "twice"], ["WALK", "WALK"])])
    # position 0: WALK right once out of 2; position 1: JUMP wrong twice -> 1 / 4
    assert token_accuracy(maj, test) == pytest.approx(0.25)


def test_sham_regulariser_changes_nothing_but_the_random_stream():
    s = Settings(d_model=16, n_layers=2, n_heads=2, d_ff=32, epochs=1, batch_size=16, he_batch_size=8,
                 dropout=0.0, he_layers=(1, 2))
    data = encode_set(generate_dataset(2, 0, 40, 0))
    base, _ = train_cell(data, "baseline", 0, s)
    sham, hist = train_cell(data, "he_reg_sham", 0, s)
    # without dropout the extra forward pass draws no randomness and the weight-0 term adds no gradient
    for a, b in zip(base.state_dict().values(), sham.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError):
        train_cell(data, "other", 0, s)


# --- verdicts on synthetic tables (the shared rule, through the registry) --------------------------------

def _claims():
    return load_claims("homomorphism_error")


def test_registry_kinds():
    kinds = {cid: c.kind for cid, c in _claims().items()}
    assert kinds["he_reg_lowers_modifier_he_v2"] == "check"  # a manipulation check of the regulariser
    assert all(k == "replication" for cid, k in kinds.items() if cid != "he_reg_lowers_modifier_he_v2")


def _grid(he_of_noise, acc_of_noise, init_of_noise=lambda n: 0.01, seeds=(0, 1, 2), noises=(0, 3, 6, 9, 12, 15),
          jitter=0.0, id_acc=0.9):
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        for n in noises:
            he = he_of_noise(n) + jitter * rng.normal()
            init = init_of_noise(n) + jitter * rng.normal()
            rows.append({"seed": s, "noise": n, "condition": "baseline", "mod_he": he, "mod_he_norm": he * 10,
                         "init_mod_he": init, "init_mod_he_norm": init * 10,
                         "ood_acc": acc_of_noise(n) + jitter * rng.normal(), "scan_fragment_acc": id_acc})
    return pd.DataFrame(rows)


def test_polynomial_r2():
    x = np.arange(6.0)
    assert polynomial_r2(x, 2 * x + 1, 1) == pytest.approx(1.0)
    assert polynomial_r2(x, x ** 2, 2) == pytest.approx(1.0)
    assert polynomial_r2(x, x ** 2, 1) < 1.0


def test_he_predicts_ood():
    claim = _claims()["he_predicts_ood_v2"]
    he, acc = (lambda n: 0.002 + 0.0002 * n), (lambda n: 0.47 - 0.003 * n)
    good = _grid(he, acc, init_of_noise=lambda n: 0.01 + 0.001 * np.sin(n), jitter=1e-5)
    c = evaluate_he_predicts_ood(claim, good, "mod_he")
    assert c.verdict == "reproduced" and c.measured.value < -0.99 and c.gate.passed and c.control_meets is False
    # the untrained model's HE rises with noise too: the control meets the criterion -> inconclusive
    confounded = _grid(he, acc, init_of_noise=lambda n: 0.01 + 0.0005 * n, jitter=1e-5)
    c = evaluate_he_predicts_ood(_claims()["he_predicts_ood_v2"], confounded, "mod_he")
    assert c.verdict == "inconclusive" and c.control_meets is True
    wrong_sign = _grid(he, lambda n: 0.40 + 0.003 * n, jitter=1e-5)
    assert evaluate_he_predicts_ood(_claims()["he_predicts_ood_v2"], wrong_sign, "mod_he").verdict == "not_reproduced"
    untrained = _grid(he, acc, jitter=1e-5, id_acc=GATE_ACC - 0.1)
    c = evaluate_he_predicts_ood(_claims()["he_predicts_ood_v2"], untrained, "mod_he")
    assert c.verdict == "inconclusive" and not c.gate.passed
    few = _grid(lambda n: 0.002, lambda n: 0.4, noises=(0, 3))
    assert evaluate_he_predicts_ood(_claims()["he_predicts_ood_v2"], few, "mod_he").verdict == "inconclusive"
    c = evaluate_he_predicts_ood(_claims()["he_predicts_ood_normalised_v2"], good, "mod_he_norm")
    assert c.verdict == "reproduced"


def test_noise_raises_he():
    up = _grid(lambda n: 0.002 + 0.0002 * n, lambda n: 0.4, init_of_noise=lambda n: 0.01 - 0.0001 * n, jitter=1e-6)
    c = evaluate_noise_raises_he(_claims()["noise_raises_he_v2"], up)
    assert c.verdict == "reproduced" and c.measured.value == pytest.approx(1.0)
    assert c.control.measured.value == pytest.approx(-1.0) and c.control_meets is False
    both_up = _grid(lambda n: 0.002 + 0.0002 * n, lambda n: 0.4, init_of_noise=lambda n: 0.01 + 0.0001 * n)
    c = evaluate_noise_raises_he(_claims()["noise_raises_he_v2"], both_up)
    assert c.verdict == "inconclusive" and c.control_meets is True
    down = _grid(lambda n: 0.01 - 0.0002 * n, lambda n: 0.4, jitter=1e-6)
    c = evaluate_noise_raises_he(_claims()["noise_raises_he_v2"], down)
    assert c.verdict == "not_reproduced" and c.measured.value == pytest.approx(-1.0)


def _paired(diffs, sham=(0.0002, -0.0003, 0.0001), id_acc=0.9):
    rows = []
    for s, d in enumerate(diffs):
        for n in (3, 9):
            rows.append({"seed": s, "noise": n, "condition": "baseline", "mod_he": 0.005, "scan_fragment_acc": id_acc})
            rows.append({"seed": s, "noise": n, "condition": "he_reg", "mod_he": 0.005 + d, "scan_fragment_acc": id_acc})
            if s < len(sham):
                rows.append({"seed": s, "noise": n, "condition": "he_reg_sham", "mod_he": 0.005 + sham[s],
                             "scan_fragment_acc": id_acc})
    return pd.DataFrame(rows)


def test_he_reg():
    check = _claims()["he_reg_lowers_modifier_he_v2"]
    c = evaluate_he_reg(check, _paired([-0.001, -0.0011, -0.0009]), "mod_he")
    # mean -0.001, t interval -0.001 +- 4.303 * 0.0001 / sqrt(3)
    assert c.verdict == "passed" and c.measured.value == pytest.approx(-0.001)
    assert c.measured.ci_high == pytest.approx(-0.001 + 4.302653 * 0.0001 / np.sqrt(3), rel=1e-5)
    assert c.control.measured.value == pytest.approx(0.0) and c.control_meets is False
    # a sham arm that "lowers" HE as much: the criterion does not discriminate
    c = evaluate_he_reg(_claims()["he_reg_lowers_modifier_he_v2"],
                        _paired([-0.001, -0.0011, -0.0009], sham=(-0.001, -0.0011, -0.0009)), "mod_he")
    assert c.verdict == "failed" and c.control_meets is True
    rep = _claims()["he_reg_lowers_sequence_he_v2"]
    table = _paired([-0.002, 0.0015, -0.001]).rename(columns={"mod_he": "seq_he"})
    assert evaluate_he_reg(rep, table, "seq_he").verdict == "inconclusive"
    wrong = _paired([0.001, 0.0011, 0.0009]).rename(columns={"mod_he": "seq_he"})
    assert evaluate_he_reg(_claims()["he_reg_lowers_sequence_he_v2"], wrong, "seq_he").verdict == "not_reproduced"
    gated = _paired([-0.001, -0.0011, -0.0009], id_acc=0.3).rename(columns={"mod_he": "seq_he"})
    c = evaluate_he_reg(_claims()["he_reg_lowers_sequence_he_v2"], gated, "seq_he")
    assert c.verdict == "inconclusive" and not c.gate.passed
    # "greater" (OOD accuracy): a consistent decrease is not reproduced
    ood = _paired([-0.001, -0.0011, -0.0009]).rename(columns={"mod_he": "ood_acc"})
    assert evaluate_he_reg(_claims()["he_reg_improves_ood_v2"], ood, "ood_acc").verdict == "not_reproduced"
    none = ood[ood["condition"] == "baseline"]
    c = evaluate_he_reg(_claims()["he_reg_improves_ood_v2"], none, "ood_acc")
    assert c.verdict == "inconclusive"

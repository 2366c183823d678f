"""shared.lm on tiny randomly initialised models: likelihoods, padding invariance, generation."""

import pytest
import torch
import torch.nn.functional as F

from shared.lm import (causal_lm_loss, continuation_logprobs, greedy_generate, pad_left, tiny_gpt2,
                       tiny_llama, token_logprobs, total_nll)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    torch.manual_seed(0)
    build = tiny_llama if request.param == "llama" else tiny_gpt2
    return build(vocab_size=23, max_len=64, d_model=32, n_layers=2, n_heads=4).eval()


def test_token_logprobs_match_manual_log_softmax(model):
    ids = torch.randint(1, 23, (2, 7))
    lp = token_logprobs(model, ids)
    logits = model(input_ids=ids).logits
    manual = F.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(lp, manual, atol=1e-5)


def test_continuation_scores_do_not_depend_on_padding_or_batching(model):
    prompts = [[3, 4, 5, 6, 7], [8], [9, 10, 11]]
    conts = [[12], [13, 14, 15], [16, 17]]
    batched = continuation_logprobs(model, prompts, conts, pad_id=0, batch_size=3)
    single = torch.cat([continuation_logprobs(model, [p], [c], pad_id=0) for p, c in zip(prompts, conts)])
    assert torch.allclose(batched, single, atol=1e-4)
    # equals the sum of the unpadded token log-probs
    ids = torch.tensor([prompts[1] + conts[1]])
    assert batched[1].item() == pytest.approx(token_logprobs(model, ids)[0, -3:].sum().item(), abs=1e-4)
    norm = continuation_logprobs(model, prompts, conts, pad_id=0, normalize=True)
    assert norm[1].item() == pytest.approx(batched[1].item() / 3, abs=1e-5)


def test_loss_mask_selects_targets(model):
    ids = torch.randint(1, 23, (2, 6))
    mask = torch.zeros(2, 6, dtype=torch.long)
    mask[:, 4:] = 1  # predict only the last two tokens
    lp = token_logprobs(model, ids)
    expected = -lp[:, 3:].mean()
    assert causal_lm_loss(model, ids, loss_mask=mask).item() == pytest.approx(expected.item(), abs=1e-5)
    assert causal_lm_loss(model, ids).item() == pytest.approx(-lp.mean().item(), abs=1e-5)


def test_total_nll_counts_real_tokens_only(model):
    ids, mask = pad_left([[1, 2, 3, 4], [5, 6]], pad_id=0)
    nll, count = total_nll(model, [(ids, mask)])
    assert count == 3 + 1
    ref = -(token_logprobs(model, torch.tensor([[1, 2, 3, 4]])).sum() + token_logprobs(model, torch.tensor([[5, 6]])).sum())
    assert nll == pytest.approx(ref.item(), abs=1e-4)


def test_greedy_generation_is_batch_invariant_and_matches_hf_generate(model):
    prompts = [[3, 4, 5], [6], [7, 8, 9, 10, 11]]
    batched = greedy_generate(model, prompts, max_new_tokens=6, pad_id=0, batch_size=3)
    single = [greedy_generate(model, [p], max_new_tokens=6, pad_id=0)[0] for p in prompts]
    assert batched == single
    hf = model.generate(torch.tensor([prompts[2]]), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert hf[0, 5:].tolist() == batched[2]


def test_generation_stops_at_eos(model):
    first = greedy_generate(model, [[3, 4]], max_new_tokens=5, pad_id=0)[0]
    eos = first[1]
    cut = greedy_generate(model, [[3, 4]], max_new_tokens=5, pad_id=0, eos_id=eos)[0]
    assert cut == first[: first.index(eos) + 1]

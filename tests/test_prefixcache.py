"""shared.prefixcache: running the shared prefix once gives what the plain functions give."""

import pytest
import torch

from shared.lm import continuation_logprobs, greedy_generate, tiny_llama
from shared.prefixcache import (common_prefix_length, continuation_logprobs_shared_prefix,
                                greedy_generate_shared_prefix)


def _tiny():
    torch.manual_seed(0)
    return tiny_llama(50, 128, d_model=32, n_layers=2, n_heads=4).eval()


PREFIX = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
PROMPTS = [PREFIX + s for s in ([13, 14, 15], [16], [17, 18, 19, 20, 21, 22], [23, 24], [25, 26, 27])]


def test_common_prefix_length_hand_cases():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0
    assert common_prefix_length([]) == 0


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_greedy_generation_equals_the_plain_function(batch_size):
    model = _tiny()
    want = greedy_generate(model, PROMPTS, 6, pad_id=0, eos_id=[30, 31], batch_size=batch_size)
    got = greedy_generate_shared_prefix(model, PROMPTS, 6, pad_id=0, eos_id=[30, 31], batch_size=batch_size)
    assert got == want
    assert all(len(g) >= 1 for g in got)


def test_generation_with_a_stop_token_cuts_after_it():
    model = _tiny()
    free = greedy_generate_shared_prefix(model, PROMPTS, 6, pad_id=0)
    stop = free[0][1]  # the second token generated for the first prompt
    cut = greedy_generate_shared_prefix(model, PROMPTS, 6, pad_id=0, eos_id=stop)
    assert cut[0] == free[0][: free[0].index(stop) + 1]
    assert cut == greedy_generate(model, PROMPTS, 6, pad_id=0, eos_id=stop)


@pytest.mark.parametrize("normalize", [False, True])
def test_continuation_logprobs_equal_the_plain_function(normalize):
    model = _tiny()
    conts = [[30], [31, 32], [33, 34, 35], [36], [37, 38]]
    want = continuation_logprobs(model, PROMPTS, conts, pad_id=0, batch_size=2, normalize=normalize)
    got = continuation_logprobs_shared_prefix(model, PROMPTS, conts, pad_id=0, batch_size=2, normalize=normalize)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # and a hand computation of the first pair from the full logits
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([PROMPTS[0] + conts[0]])).logits[0], -1)
    assert float(got[0]) == pytest.approx(float(lp[len(PROMPTS[0]) - 1, 30]), abs=1e-5)


def test_a_short_shared_prefix_falls_back_to_the_plain_functions():
    model = _tiny()
    prompts = [[3, 4, 5], [3, 9, 10, 11]]  # one shared token < min_prefix
    assert greedy_generate_shared_prefix(model, prompts, 4, pad_id=0) == greedy_generate(model, prompts, 4, pad_id=0)
    conts = [[12], [13, 14]]
    torch.testing.assert_close(continuation_logprobs_shared_prefix(model, prompts, conts, pad_id=0),
                               continuation_logprobs(model, prompts, conts, pad_id=0))


def test_a_prompt_that_is_the_whole_prefix_still_runs_its_last_token():
    model = _tiny()
    prompts = [PREFIX, PREFIX + [13, 14]]
    assert greedy_generate_shared_prefix(model, prompts, 3, pad_id=0) == greedy_generate(model, prompts, 3, pad_id=0)


def test_bad_input_is_refused():
    model = _tiny()
    with pytest.raises(ValueError, match="empty prompt"):
        greedy_generate_shared_prefix(model, [[]], 3, pad_id=0)
    with pytest.raises(ValueError, match="2 prompts but 1"):
        continuation_logprobs_shared_prefix(model, PROMPTS[:2], [[1]], pad_id=0)
    with pytest.raises(ValueError, match="empty continuation"):
        continuation_logprobs_shared_prefix(model, PROMPTS[:1], [[]], pad_id=0)

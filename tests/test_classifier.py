import numpy as np
import pytest
import torch
import torch.nn as nn

from shared.classifier import accuracy, cross_entropy_loss, minibatch_sampler


def test_sampler_draws_the_same_rows_of_every_tensor_and_follows_the_generator():
    x = torch.arange(10.0)[:, None] * 10  # row i holds 10 * i
    y = torch.arange(10)
    fn = minibatch_sampler([x, y], 4, torch.Generator().manual_seed(0))
    xb, yb = fn(0)
    assert xb.shape == (4, 1) and torch.equal(xb[:, 0], yb.float() * 10)
    expected = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(yb, expected)
    again = minibatch_sampler([x, y], 4, torch.Generator().manual_seed(0))(7)
    assert torch.equal(again[1], yb)  # the step number does not enter the draw


def test_sampler_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="disagree"):
        minibatch_sampler([torch.zeros(3), torch.zeros(4)], 2, torch.Generator())
    with pytest.raises(ValueError, match="batch size"):
        minibatch_sampler([torch.zeros(3)], 0, torch.Generator())


def test_cross_entropy_loss_and_accuracy_against_hand_values():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # logits = inputs
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    # example 1: uniform logits -> log 2; example 2: logits (2, 0), label 1 -> log(1 + e^2)
    expected = (np.log(2) + np.log(1 + np.exp(2.0))) / 2
    assert float(cross_entropy_loss(model, (x, y))) == pytest.approx(expected, rel=1e-6)
    # argmax: row 1 ties -> index 0 (right), row 2 -> 0 (wrong)
    assert accuracy(model, x.numpy(), y.numpy()) == 0.5

"""shared.stacked: independent members in one module."""

import pytest
import torch

from shared.stacked import StackedLayers, StackedLinear, select_members, stacked_uniform


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_members_do_not_depend_on_their_neighbours():
    a = StackedLinear.uniform(3, 4, _gens(7), 0.5, 0.1)
    b = StackedLinear.uniform(3, 4, _gens(1, 7), 0.5, 0.1)
    assert torch.equal(a.weight[0], b.weight[1]) and torch.equal(a.bias[0], b.bias[1])
    assert a.weight.abs().max() <= 0.5 and a.bias.abs().max() <= 0.1
    assert torch.equal(StackedLinear.uniform(2, 2, _gens(0), 1.0).bias, torch.zeros(1, 1, 2))


def test_forward_is_each_members_affine_map():
    layer = StackedLinear.uniform(3, 2, _gens(0, 1), 1.0, 1.0)
    x = torch.randn(2, 5, 3)
    out = layer(x)
    for m in range(2):
        assert torch.allclose(out[m], x[m] @ layer.weight[m] + layer.bias[m], atol=1e-6)


def test_tiles_and_selection():
    layer = StackedLinear.uniform(2, 2, _gens(0, 1), 1.0, n_tiles=3)
    assert layer.members == 6 and torch.equal(layer.weight[4], layer.weight[0])
    assert torch.equal(layer.weight[5], layer.weight[1]) and not torch.equal(layer.weight[0], layer.weight[1])
    assert torch.equal(layer.weight[2], layer.weight[0])
    picked = select_members(layer, [1, 1, 0])
    assert picked.members == 3 and torch.equal(picked.weight[2], layer.weight[0])
    picked.weight.data.zero_()
    assert layer.weight.abs().sum() > 0  # a copy, not a view
    assert stacked_uniform((2,), _gens(3, 4), 1.0).shape == (2, 2)
    with pytest.raises(ValueError, match="bias"):
        StackedLinear(torch.zeros(2, 3, 4), torch.zeros(2, 4))


def test_stacked_layers_exposes_its_layers_parameters():
    class Net(StackedLayers):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([StackedLinear.uniform(3, 4, _gens(0, 1), 1.0),
                                               StackedLinear.uniform(4, 1, _gens(0, 1), 1.0, 0.5)])

    net = Net()
    assert net.members == 2
    assert [w.shape for w in net.weights] == [(2, 3, 4), (2, 4, 1)]
    assert net.biases[0] is net.layers[0].bias and net.biases[1] is net.layers[1].bias

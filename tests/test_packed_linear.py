"""oneDNN-packed linear layers for the sampling loop: same products, restored layers, inference only."""

import pytest
import torch
from torch import nn

from ip2n.ops.packed_linear import packed_linears, packing_applies


def _layers(seed: int = 0) -> list[nn.Linear]:
    torch.manual_seed(seed)
    return [nn.Linear(48, 96), nn.Linear(96, 48, bias=False)]


def test_packed_layers_give_the_plain_products_and_are_restored():
    layers = _layers()
    parameters = [
        (parameter, parameter.data_ptr(), parameter.clone())
        for layer in layers
        for parameter in layer.parameters()
    ]
    x = torch.randn(2, 16, 48)
    with torch.no_grad():
        plain = layers[1](layers[0](x))
        with packed_linears(layers, rows=32):
            assert all("forward" in layer.__dict__ for layer in layers)
            packed = layers[1](layers[0](x))
            other_rows = layers[1](layers[0](x[:1]))  # a row count other than the packing's still works
    assert not any("forward" in layer.__dict__ for layer in layers)
    assert (packed - plain).abs().max() < 1e-5 * plain.abs().max()
    assert (other_rows - plain[:1]).abs().max() < 1e-5 * plain.abs().max()
    after = [parameter for layer in layers for parameter in layer.parameters()]
    assert all(before is now for (before, _, _), now in zip(parameters, after, strict=True))  # same objects
    assert all(
        parameter.data_ptr() == pointer and torch.equal(parameter, copy)
        for parameter, pointer, copy in parameters
    )


def test_nothing_is_packed_when_gradients_are_on():
    layers = _layers()
    assert not packing_applies(layers)
    x = torch.randn(4, 48, requires_grad=True)
    with packed_linears(layers, rows=4):
        assert not any("forward" in layer.__dict__ for layer in layers)
        layers[1](layers[0](x)).sum().backward()
    assert x.grad is not None and layers[0].weight.grad is not None


def test_nothing_is_packed_for_float64_weights():
    layers = [layer.double() for layer in _layers()]
    with torch.no_grad():
        assert not packing_applies(layers)
        with packed_linears(layers, rows=4):
            assert not any("forward" in layer.__dict__ for layer in layers)


def test_layers_are_restored_when_the_loop_fails():
    layers = _layers()
    with torch.no_grad(), pytest.raises(RuntimeError, match="interrupted"):
        with packed_linears(layers, rows=8):
            raise RuntimeError("interrupted")
    assert not any("forward" in layer.__dict__ for layer in layers)

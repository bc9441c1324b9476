"""Whole models on CUDA against the same models on CPU (run by bench/gpu_check.sh's ``-k cuda``).

The op tests compare each op on CUDA with CPU; these compare every registered family end to end
(the custom autograd functions of Context Cluster, PointMLP's grouping and max, CLUENet's
depthwise lattice convolution, the packing of images and masks), in float64 so that the hard
assignments cannot flip on rounding: eval outputs, training loss and every parameter gradient.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pointctx import PointBatch, create_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

F64 = torch.float64


def _images(b, c, hw, seed=0, masked=False):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, c, hw, hw, generator=g, dtype=F64)
    if not masked:
        return (img,)
    return (img, torch.rand(b, hw, hw, generator=g) < 0.7)


def _clouds(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (PointBatch.from_list([torch.rand(n, 3, generator=g, dtype=F64) * 2 - 1
                                  for n in sizes]),)


# name -> (model kwargs, inputs)
CASES = {
    "coc_mnist": ({"in_channels": 1}, lambda: _images(3, 1, 28)),
    "coc_mnist-masked": ({"in_channels": 1}, lambda: _images(3, 1, 28, masked=True)),
    "coc_tiny_cifar": ({}, lambda: _images(2, 3, 32)),
    "cluenet_micro_cifar": ({}, lambda: _images(2, 3, 32)),
    "pointmlp_elite": ({"k_neighbors": 8, "drop_rate": 0.0}, lambda: _clouds([200, 160, 256])),
}


def _to(args, device):
    return tuple(a.to(device) for a in args)


def _loss_and_grads(model, args):
    for p in model.parameters():
        p.grad = None
    loss = model(*args).square().mean()
    loss.backward()
    return loss.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters()
                                 if p.grad is not None}


def check_model_on(device, case, rtol=1e-6, atol=1e-8):
    """``case``'s model on ``device`` against the same weights on CPU (outputs, loss, grads)."""
    kwargs, make = CASES[case]
    torch.manual_seed(0)
    model = create_model(case.split("-")[0], num_classes=5, **kwargs).double()
    other = copy.deepcopy(model).to(device)
    args = make()
    model.eval()
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(*_to(args, device)).cpu(), model(*args),
                                   rtol=rtol, atol=atol)
    model.train()
    other.train()
    loss, grads = _loss_and_grads(model, args)
    loss_d, grads_d = _loss_and_grads(other, _to(args, device))
    torch.testing.assert_close(loss_d, loss, rtol=rtol, atol=atol)
    assert grads_d.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(grads_d[name], g, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_cuda_model_matches_cpu(case):
    check_model_on("cuda", case)

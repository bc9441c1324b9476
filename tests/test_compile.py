"""pointctx.compile: opt-in torch.compile with dynamic shapes."""

import pytest
import torch

import pointctx
from pointctx import PointBatch


def test_compile_rejects_non_modules():
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module, got str"):
        pointctx.compile("coc_tiny")


def test_compile_wraps_and_shares_parameters():
    model = pointctx.create_model("coc_mnist")
    compiled = pointctx.compile(model, backend="eager")
    assert compiled._orig_mod is model
    assert [p.data_ptr() for p in compiled.parameters()] == [p.data_ptr() for p in
                                                             model.parameters()]
    assert torch._dynamo.config.cache_size_limit >= 64


def _agree(model, batches, backend):
    model.eval()
    compiled = pointctx.compile(model, backend=backend)
    with torch.no_grad():
        for args in batches:
            torch.testing.assert_close(compiled(*args), model(*args), rtol=1e-4, atol=1e-5)
    # training: same loss and gradients
    model.train()
    for p in model.parameters():
        p.grad = None
    eager_loss = model(*batches[0]).square().mean()
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    for p in model.parameters():
        p.grad = None
    loss = compiled(*batches[0]).square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-6)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_matches_eager_coc_pointmlp_cluenet(backend):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = [(torch.randn(2, 1, 28, 28, generator=g),),
              (torch.randn(3, 1, 28, 28, generator=g),)]  # a new batch size: no recompiling
    _agree(pointctx.create_model("coc_mnist"), images, backend)
    clouds = [(PointBatch.from_padded(torch.randn(2, n, 3, generator=g)),) for n in (96, 128)]
    _agree(pointctx.create_model("pointmlp_elite", num_classes=5, k_neighbors=8,
                                  drop_rate=0.0), clouds, backend)
    small = [(torch.randn(2, 3, 32, 32, generator=g),), (torch.randn(3, 3, 32, 32, generator=g),)]
    _agree(pointctx.create_model("cluenet_micro_cifar"), small, backend)

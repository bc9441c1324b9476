import pytest
import torch

from pointctx.ops import slot_max
from pointctx.ops.slot_max import slot_max_naive


def _grads(fn, x, dim, g):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, dim)
    (out * g).sum().backward()
    return out, x.grad


@pytest.mark.parametrize("shape,dim", [((6, 5, 4), 1), ((0, 3, 2), 1), ((4, 1, 3), 1),
                                       ((3, 7), -1), ((2, 300, 3), 1), ((5, 4, 2, 3), 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_values_and_gradients_as_amax_with_ties(shape, dim, dtype):
    g = torch.Generator().manual_seed(0)
    # ReLU'd and rounded values: many exact ties (zeros and repeated values), as after PointMLP's
    # residual blocks; also duplicated slots like the filled neighbour slots
    x = torch.relu(torch.randn(shape, generator=g, dtype=dtype)).mul(2).round()
    if x.dim() == 3 and x.shape[1] > 2:
        x[:, 2] = x[:, 0]
    out_shape = list(x.shape)
    del out_shape[dim]
    w = torch.randn(out_shape, generator=g, dtype=dtype)
    ref, ref_grad = _grads(slot_max_naive, x, dim, w)
    out, grad = _grads(slot_max, x, dim, w)
    assert torch.equal(out, ref)
    assert torch.equal(grad, ref_grad)  # bit for bit: ties share the gradient evenly
    assert grad.dtype == dtype


def test_no_grad_and_inference_paths():
    x = torch.randn(3, 4, 5)
    assert torch.equal(slot_max(x), x.amax(1))
    with torch.no_grad():
        assert torch.equal(slot_max(x.requires_grad_(True)), x.amax(1))


def test_bad_inputs():
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        slot_max(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`dim` must be an int in \[-3, 2\]"):
        slot_max(torch.ones(2, 3, 4), 3)
    with pytest.raises(ValueError, match="`x` must have at least one slot along dim 1"):
        slot_max(torch.ones(2, 0, 4))


def test_rows_with_slots_equal_the_grouped_call():
    g = torch.Generator().manual_seed(2)
    x = torch.relu(torch.randn(4, 3, 5, generator=g)).round()
    w = torch.randn(4, 5, generator=g)
    ref, ref_grad = _grads(slot_max_naive, x, 1, w)
    rows = x.reshape(12, 5).clone().requires_grad_(True)
    out = slot_max(rows, 1, slots=3)
    (out * w).sum().backward()
    assert torch.equal(out, ref) and rows.grad.shape == (12, 5)
    assert torch.equal(rows.grad.view(4, 3, 5), ref_grad)
    with torch.no_grad():
        assert torch.equal(slot_max(rows, slots=3), ref)
    with pytest.raises(ValueError, match="must have a multiple of `slots` = 5 rows"):
        slot_max(rows, slots=5)
    with pytest.raises(ValueError, match="`dim` must be 1 with `slots`"):
        slot_max(rows, 2, slots=3)
    with pytest.raises(ValueError, match="`slots` must be an int >= 1"):
        slot_max(rows, slots=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(64, 8, 16, generator=g)).round()
    w = torch.randn(64, 16, generator=g)
    out, grad = _grads(slot_max, x, 1, w)
    out_c, grad_c = _grads(slot_max, x.cuda(), 1, w.cuda())
    assert torch.equal(out_c.cpu(), out) and torch.equal(grad_c.cpu(), grad)

import pytest
import torch

from pointctx._checks import check_point_inputs


def test_check_point_inputs():
    x, pos = torch.randn(5, 3), torch.randn(5, 2)
    batch = torch.tensor([0, 0, 1, 1, 1])
    assert check_point_inputs(x, pos, batch, None, 3) is None
    assert check_point_inputs(x, pos, batch, 2, 3) == 2
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 4\]"):
        check_point_inputs(x, pos, batch, None, 4)
    with pytest.raises(ValueError, match="floating point"):
        check_point_inputs(x.long(), pos, batch, None, 3)
    with pytest.raises(ValueError, match="one row per point"):
        check_point_inputs(x, pos[:4], batch, None, 3)
    with pytest.raises(ValueError, match="sorted ascending"):
        check_point_inputs(x, pos, batch.flip(0), None, 3)
    check_point_inputs(x, pos, batch.flip(0), None, 3, validate=False)  # values not checked
    with pytest.raises(ValueError, match="must be < batch_size = 1"):
        check_point_inputs(x, pos, batch, 1, 3)
    with pytest.raises(ValueError, match=r"`batch` must have shape \[N\] = \[5\]"):
        check_point_inputs(x, pos, batch[:4], None, 3, validate=False)
    with pytest.raises(ValueError, match="integer tensor"):
        check_point_inputs(x, pos, batch.float(), None, 3, validate=False)
    with pytest.raises(TypeError, match="`pos` must be a torch.Tensor"):
        check_point_inputs(x, None, batch, None, 3)
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_point_inputs(x, pos.clone().fill_(float("nan")), batch, None, 3)

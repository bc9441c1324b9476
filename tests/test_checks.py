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


def test_check_int_and_check_number():
    import numpy as np

    from pointctx._checks import check_int, check_number

    assert check_int(np.int64(3), "k", 1) == 3 and isinstance(check_int(np.int64(3), "k"), int)
    with pytest.raises(TypeError, match=r"`k` must be an int >= 1, got 2.5"):
        check_int(2.5, "k", 1)
    with pytest.raises(ValueError, match=r"`k` must be an int >= 1, got True"):
        check_int(True, "k", 1, type_error=ValueError)
    with pytest.raises(ValueError, match=r"`count` must be an int in \[1, 4\], got 5"):
        check_int(5, "count", 1, 4)
    assert check_number(1, "p", 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\), got 1"):
        check_number(1, "p", 0.0, 1.0, max_open=True)
    with pytest.raises(ValueError, match=r"`tau` must be a number > 0, got 0"):
        check_number(0, "tau", 0.0, min_open=True)
    with pytest.raises(ValueError, match=r"`eps` must be a number >= 0, got nan"):
        check_number(float("nan"), "eps", 0.0)
    with pytest.raises(TypeError, match=r"`eps` must be a number, got '1'"):
        check_number("1", "eps")


def test_check_int_and_check_number_options():
    import numpy as np

    from pointctx._checks import check_int, check_number, is_int, is_number

    assert [is_int(v) for v in (3, np.int32(3), True, 3.0, "3", None)] == [
        True, True, False, False, False, False]
    assert [is_number(v) for v in (3, 2.5, np.float32(2.5), np.int64(1), False, "1", None)] == [
        True, True, True, True, False, False, False]
    assert check_int(None, "n", 1, optional=True) is None
    assert check_number(None, "p", optional=True) is None
    with pytest.raises(ValueError, match=r"`n` must be None or an int >= 1, got 0"):
        check_int(0, "n", 1, optional=True)
    with pytest.raises(TypeError, match=r"`p` must be None or a number, got 'a'"):
        check_number("a", "p", optional=True)
    # `must` words the out-of-bounds message; {bounds} stands for the bounds
    with pytest.raises(ValueError, match=r"^`p` must lie in \[0, 1\), got 1.0$"):
        check_number(1.0, "p", 0.0, 1.0, max_open=True, must="lie {bounds}")
    with pytest.raises(ValueError, match=r"^`n` must be in \[2, 3\], got 5$"):
        check_int(5, "n", 2, 3, must="be {bounds}")
    with pytest.raises(TypeError, match=r"^`p` must be a number in \[0, 1\), got 'a'$"):
        check_number("a", "p", 0.0, 1.0, max_open=True, must="lie {bounds}")


def test_all_finite_is_exact_including_sum_overflow():
    import torch

    from pointctx._checks import all_finite

    assert all_finite(torch.empty(0, 3))
    assert all_finite(torch.randn(100, 4))
    big = torch.full((10, 3), 3e38)  # finite values whose float32 sum overflows
    assert not torch.isfinite(big.sum()) and all_finite(big)
    assert all_finite(torch.full((4,), 6e4, dtype=torch.float16))  # fp16 sum overflows too
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(50, 3)
        x[17, 2] = bad
        assert not all_finite(x)
    both = torch.randn(8, 2)
    both[0, 0], both[1, 1] = float("inf"), -float("inf")  # inf - inf = nan: still caught
    assert not all_finite(both)


def test_check_callable():
    from pointctx._checks import check_callable

    assert check_callable(len, "f") is len
    assert check_callable(None, "f", optional=True) is None
    with pytest.raises(TypeError, match=r"^`f` must be callable, got NoneType$"):
        check_callable(None, "f")
    with pytest.raises(TypeError, match=r"^`parts\[2\]` must be callable or None, got int$"):
        check_callable(3, "parts[2]", optional=True)


def test_optional_import_names_the_purpose_and_the_install_command():
    from pointctx._checks import optional_import

    assert optional_import("math", "anything", "nothing").sqrt(4.0) == 2.0
    with pytest.raises(ImportError, match=r"reading x needs no_such_pkg: pip install no-such"):
        optional_import("no_such_pkg.sub", "reading x", "no-such")

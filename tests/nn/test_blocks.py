import pytest
import torch
from torch import nn

from pointctx import PointBatch
from pointctx.nn import ContextClusterBlock, DropPath, LayerScale, Mlp, SetGroupNorm


def _pixel_sets(b=2, c=8, h=8, w=8, keep=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, c, h, w, generator=g)
    mask = None if keep is None else torch.rand(b, h, w, generator=g) < keep
    return PointBatch.from_images(images, mask)


def _block(**kw):
    torch.manual_seed(0)
    cfg = dict(mlp_ratio=2.0, heads=2, head_dim=4, centers=2, regions=2, bounds=(-0.5, 0.5))
    cfg.update(kw)
    return ContextClusterBlock(8, **cfg)


def test_pre_norm_residual_composition():
    pb = _pixel_sets()
    blk = _block(layer_scale_init=0.3).eval()
    out = blk(pb.x, pb.pos, pb.batch, 2)
    b = pb.batch
    y = pb.x + 0.3 * blk.token_mixer(blk.norm1(pb.x, b, 2), pb.pos, b, 2)
    y = y + 0.3 * blk.mlp(blk.norm2(y, b, 2))
    torch.testing.assert_close(out, y)
    assert out.shape == pb.x.shape


def test_norm_is_per_set_groupnorm_and_no_layer_scale():
    pb = _pixel_sets(b=1)
    blk = _block(layer_scale_init=None).eval()
    assert isinstance(blk.layer_scale_1, nn.Identity)
    gn = nn.GroupNorm(1, 8)
    images = pb.to_images()
    normed = PointBatch.from_images(gn(images)).x
    torch.testing.assert_close(blk.norm1(pb.x, pb.batch), normed, rtol=1e-5, atol=1e-5)
    mixed = blk.token_mixer(normed, pb.pos, pb.batch)
    y = pb.x + mixed
    y = y + blk.mlp(PointBatch.from_images(gn(pb.to_images(x=y))).x)
    torch.testing.assert_close(blk(pb.x, pb.pos, pb.batch), y, rtol=1e-5, atol=1e-5)


def test_layer_scale_init_zero_is_identity_and_all_params_get_grad():
    pb = _pixel_sets(keep=0.6)
    blk = _block(layer_scale_init=0.0)
    out = blk(pb.x, pb.pos, pb.batch, 2)
    torch.testing.assert_close(out, pb.x)
    blk = _block(layer_scale_init=0.5)
    out, assignment = blk(pb.x, pb.pos, pb.batch, 2, return_assignment=True)
    assert assignment.center.shape == (pb.num_points, 2)
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in blk.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_same_alone_as_in_batch():
    pb = _pixel_sets(b=3, keep=0.7, seed=3)
    blk = _block(layer_scale_init=1.0).eval()
    both = blk(pb.x, pb.pos, pb.batch, 3)
    one = pb.select([2])
    alone = blk(one.x, one.pos, one.batch, 1)
    torch.testing.assert_close(both[pb.batch == 2], alone, rtol=1e-5, atol=1e-5)


def test_drop_path_drops_whole_sets():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    x = torch.ones(60, 3)
    batch = torch.arange(20).repeat_interleave(3)
    out = dp(x, batch, 20).view(20, 3, 3)
    per_set = out[:, 0, 0]
    assert torch.equal(out, per_set.view(20, 1, 1).expand(20, 3, 3))  # constant within a set
    assert set(per_set.tolist()) <= {0.0, 2.0} and len(set(per_set.tolist())) == 2
    dp.eval()
    assert dp(x, batch) is x


def test_block_drop_path_in_training():
    pb = _pixel_sets(b=8, seed=4)
    blk = _block(layer_scale_init=1.0, drop_path=0.9)
    torch.manual_seed(1)
    out = blk(pb.x, pb.pos, pb.batch, 8)
    changed = [bool((out[pb.batch == s] != pb.x[pb.batch == s]).any()) for s in range(8)]
    assert not all(changed)  # with p = 0.9 some set keeps only its identity path (both dropped)


def test_mlp_and_layer_scale():
    torch.manual_seed(0)
    mlp = Mlp(4, 16, 6)
    assert float(mlp.fc1.weight.detach().std()) < 0.05 and not mlp.fc1.bias.detach().any()
    x = torch.randn(5, 4)
    torch.testing.assert_close(mlp(x), mlp.fc2(nn.functional.gelu(mlp.fc1(x))))
    ls = LayerScale(6, 1e-5)
    torch.testing.assert_close(ls(torch.ones(2, 6)), torch.full((2, 6), 1e-5))


@pytest.mark.parametrize("n", [0, 1, 7, 64, 65])
def test_mlp_chunks_give_the_same_output_and_gradients(n):
    torch.manual_seed(0)
    whole = Mlp(4, 16, 6, chunk_points=None).double()
    chunked = Mlp(4, 16, 6, chunk_points=8).double()
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out, out2 = whole(x), chunked(x2)
    torch.testing.assert_close(out2, out)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (out2 * w).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    for (name, p), p2 in zip(whole.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(p2.grad, p.grad, msg=name)


def test_chunk_rows_resolution():
    from pointctx.nn.layers import CPU_CHUNK_ELEMENTS, check_chunk_points, chunk_rows

    cpu = torch.device("cpu")
    assert chunk_rows("auto", 256, cpu) == CPU_CHUNK_ELEMENTS // 256 == 4096
    assert chunk_rows("auto", 1 << 16, cpu) == 1024  # at least 1,024 rows
    assert chunk_rows("auto", 256, torch.device("meta")) is None  # one piece off the CPU
    assert chunk_rows(None, 256, cpu) is None and chunk_rows(100, 256, cpu) == 100
    # the default MLP chunks a large CPU input (it calls fc1 once per chunk)
    mlp = Mlp(4, 1 << 10)
    calls = []
    mlp.fc1.register_forward_hook(lambda *a: calls.append(1))
    mlp(torch.randn(2500, 4))
    assert len(calls) == 3  # 1,024-row chunks
    with pytest.raises(ValueError, match="`chunk_points` must be a positive int, 'auto' or None"):
        check_chunk_points("fast")
    with pytest.raises(ValueError, match="`chunk_points` must be"):
        Mlp(4, chunk_points=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="`mlp_ratio` must be a number > 0"):
        ContextClusterBlock(8, mlp_ratio=0)
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\)"):
        DropPath(1.0)
    blk = _block()
    with pytest.raises(ValueError, match=r"`x` must have shape \[N, 8\]"):
        blk(torch.randn(4, 3), torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_mixer_block_is_the_one_skeleton():
    from pointctx.nn import GFCBlock
    from pointctx.nn.blocks import MixerBlock

    assert issubclass(ContextClusterBlock, MixerBlock) and issubclass(GFCBlock, MixerBlock)
    torch.manual_seed(0)
    mixer, mlp = nn.Linear(8, 8), Mlp(8, 16)
    blk = MixerBlock(8, mixer, mlp, set_norm=False, layer_scale_init=0.5).eval()
    x = torch.randn(6, 8)
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    out, extra = blk.residual(x, batch, 2)
    y = x + 0.5 * mixer(blk.norm1(x))
    y = y + 0.5 * mlp(blk.norm2(y))
    torch.testing.assert_close(out, y)
    assert extra is None and isinstance(blk.norm1, nn.LayerNorm)
    assert isinstance(MixerBlock(8, mixer, mlp, set_norm=True).norm2, SetGroupNorm)

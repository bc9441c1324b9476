"""LocalBlocks (the set U-Net's local context) and the point-wise norm helpers."""

import pytest
import torch

from pointctx import PointBatch
from pointctx.nn.propagation import apply_norm, make_norm
from pointctx.nn.set_unet import LocalBlocks, SetUNetDecoder


def _blocks(norm="group", blocks=2, seed=0):
    torch.manual_seed(seed)
    return LocalBlocks(8, blocks, expand=2, norm=norm).eval()


def test_point_mode_is_equivariant_and_the_same_alone_as_in_a_batch():
    g = torch.Generator().manual_seed(1)
    pb = PointBatch.from_list([torch.randn(n, 3, generator=g) for n in (30, 12)])
    h = torch.randn(pb.num_points, 8, generator=g)
    block = _blocks()
    with torch.no_grad():
        out = block(h, pb.pos, pb.batch, 2)
        perm = torch.cat([torch.randperm(30, generator=g), 30 + torch.randperm(12, generator=g)])
        torch.testing.assert_close(block(h[perm], pb.pos[perm], pb.batch, 2), out[perm])
        alone = block(h[30:], pb.pos[30:], torch.zeros(12, dtype=torch.long), 1)
    torch.testing.assert_close(alone, out[30:])
    assert not torch.equal(out, h)  # the blocks change the features


def test_lattice_mode_sees_only_the_kept_pixels_and_zero_blocks_are_the_identity():
    g = torch.Generator().manual_seed(2)
    coords = torch.tensor([[0, 0], [0, 1], [1, 1], [2, 3]])
    h = torch.randn(4, 8, generator=g)
    batch = torch.zeros(4, dtype=torch.long)
    block = _blocks(norm="none")
    with torch.no_grad():
        out = block(h, None, batch, 1, coords, (3, 4))
        # the isolated pixel (2, 3) has no kept neighbour: its other rows do not reach it
        moved = h.clone()
        moved[:3] += 1.0
        torch.testing.assert_close(block(moved, None, batch, 1, coords, (3, 4))[3], out[3])
    assert torch.equal(LocalBlocks(8, 0)(h, None, batch, 1, coords, (3, 4)), h)


def test_batch_norm_blocks_train_and_every_parameter_gets_a_gradient():
    g = torch.Generator().manual_seed(3)
    pb = PointBatch.from_list([torch.randn(n, 2, generator=g) for n in (20, 9)])
    block = _blocks(norm="batch").train()
    out = block(torch.randn(pb.num_points, 8, generator=g), pb.pos, pb.batch, 2)
    (out * torch.randn_like(out)).sum().backward()
    assert [n for n, p in block.named_parameters()
            if p.grad is None or not p.grad.abs().sum()] == []


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="`channels` must be >= 1, got 0"):
        LocalBlocks(0)
    with pytest.raises(ValueError, match="`blocks` must be >= 0, got -1"):
        LocalBlocks(8, -1)
    with pytest.raises(ValueError, match="`expand` must be >= 1, got 0"):
        LocalBlocks(8, expand=0)
    with pytest.raises(ValueError, match="`stage_blocks` must be >= 0, got -1"):
        SetUNetDecoder([16, 32], 3, input_channels=5, stage_blocks=-1)
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        LocalBlocks(8, norm="layer")


def test_norm_helpers():
    x = torch.randn(6, 4)
    assert isinstance(make_norm("none", 4), torch.nn.Identity)
    assert torch.equal(apply_norm(make_norm("none", 4), x), x)
    assert apply_norm(make_norm("batch", 4), x[:0]).shape == (0, 4)  # no statistics from 0 rows
    with pytest.raises(ValueError, match="`batch` is required with norm='group'"):
        apply_norm(make_norm("group", 4), x)

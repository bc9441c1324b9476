"""LocalBlocks, LatticeFill and the point-wise norm helpers of the set U-Net."""

import pytest
import torch

from pointctx import PointBatch
from pointctx.nn.propagation import apply_norm, make_norm
from pointctx.nn.set_unet import LatticeFill, LocalBlocks, SetUNetDecoder
from pointctx.ops.grid import lattice_sites


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


def _cells(rows, cols, keep, k=3, batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords, batch = lattice_sites(batch_size, (rows, cols))
    kept = torch.rand(coords.shape[0], generator=g) < keep
    return torch.randn(int(kept.sum()), k, generator=g), coords[kept], batch[kept]


def test_lattice_fill_upsamples_a_full_lattice_exactly_where_cells_sit():
    fill = LatticeFill(1, prior_size=None)
    coords, batch = lattice_sites(1, (4, 5))
    ramp = (2.0 * coords[:, 1] + 3.0 * coords[:, 0]).float().unsqueeze(1)  # linear in (row, col)
    out = fill(ramp, coords, batch, 1, (4, 5), (2, 2), (7, 10))  # the last cell row is half
    assert out.shape == (1, 1, 7, 10)
    # a cell's value sits on its pixels' mean (row 2r + 0.5, col 2c + 0.5): linear inside
    rows, cols = torch.meshgrid(torch.arange(1, 6), torch.arange(1, 9), indexing="ij")
    torch.testing.assert_close(out[0, 0, 1:6, 1:9], 3.0 * (rows - 0.5) / 2 + 2.0 * (cols - 0.5) / 2)


def test_lattice_fill_without_prior_spreads_a_constant_over_any_hole():
    logits, coords, batch = _cells(6, 8, keep=0.1, seed=1)
    logits[:] = torch.tensor([1.0, -2.0, 0.5])
    out = LatticeFill(3, prior_size=None)(logits, coords, batch, 2, (6, 8), (4, 4), (24, 30))
    expected = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1).expand(2, 3, 24, 30)
    torch.testing.assert_close(out, expected)


def test_lattice_fill_prior_takes_over_far_from_data_and_learns():
    fill = LatticeFill(2, prior_size=(2, 3))
    assert sum(p.numel() for p in fill.parameters()) == 2 * 6 + 2
    with torch.no_grad():
        fill.prior[0] = 1.0  # class 0 everywhere, 10 nats after the scale
    coords = torch.tensor([[0, 0]])
    logits = torch.tensor([[0.0, 5.0]])  # one cell of class 1 in a corner of a 16x16 lattice
    out = fill(logits, coords, torch.zeros(1, dtype=torch.long), 1, (16, 16), (1, 1), (16, 16))
    assert out[0, :, 0, 0].argmax() == 1 and out[0, :, 15, 15].argmax() == 0
    out.sum().backward()
    assert fill.prior.grad.abs().sum() > 0 and bool((fill.gate.grad != 0).all())


def test_lattice_fill_bad_arguments():
    with pytest.raises(ValueError, match="prior_size"):
        LatticeFill(3, prior_size=(8,))
    with pytest.raises(ValueError, match="prior_size"):
        LatticeFill(3, prior_size=(0, 4))
    with pytest.raises(ValueError, match="prior_scale"):
        LatticeFill(3, prior_scale=0)

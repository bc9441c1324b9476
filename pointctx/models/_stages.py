"""Per-stage features of the set backbones (the ragged counterpart of timm's ``features_only``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..batch import PointBatch
from ..ops.grid import plane_cells

__all__ = ["StageBatch", "link_from_slots", "link_through", "link_union"]


def link_from_slots(index: Tensor) -> Tensor:
    """Turn a padded parent table (previous-stage rows per point, ``-1``: empty) into a link.

    Shapes:
        index: [M, S]; return: [2, E] int64.
    """
    m, s = index.shape
    child = torch.arange(m, device=index.device).repeat_interleave(s)
    parent = index.reshape(-1).long()
    keep = parent >= 0
    return _sorted_unique(child[keep], parent[keep])


def link_union(*links: Tensor) -> Tensor:
    """Union of links of the same stage (sorted by child, then parent; no duplicates).

    Shapes:
        links: [2, E_i] each; return: [2, E].
    """
    cat = torch.cat(links, 1)
    return _sorted_unique(cat[0], cat[1])


def link_through(link: Tensor, site: Tensor | None) -> Tensor:
    """Re-express a link to pooled input sites as a link to the input points they pooled.

    Args:
        link: ``(point, site)`` pairs, e.g. the stem's link after input pooling.
        site: site of every input point; None returns ``link`` itself.

    Shapes:
        link: [2, E]; site: [N0]; return: [2, E'].
    """
    if site is None:
        return link
    k = int(site.max()) + 1 if site.numel() else 0
    order = torch.argsort(site, stable=True)  # input points grouped by site
    counts = torch.bincount(site, minlength=k)
    start = torch.cumsum(counts, 0) - counts
    child, parent = link
    reps = counts.index_select(0, parent)
    total = int(reps.sum())
    first = torch.cumsum(reps, 0) - reps
    rank = torch.arange(total, device=link.device) - first.repeat_interleave(reps,
                                                                             output_size=total)
    rows = order.index_select(0, start.index_select(0, parent).repeat_interleave(
        reps, output_size=total) + rank)
    return _sorted_unique(child.repeat_interleave(reps, output_size=total), rows)


def _sorted_unique(child: Tensor, parent: Tensor) -> Tensor:
    if child.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=child.device)
    width = int(parent.max()) + 1
    key = torch.unique(child * width + parent)  # sorted
    return torch.stack([torch.div(key, width, rounding_mode="floor"), key % width])


class StageBatch(PointBatch):
    """The points of one backbone stage: a :class:`~pointctx.PointBatch` plus its link.

    Args:
        pos: positions of the stage's points (pixel sets: the image plane).
        x: features of the stage's points.
        batch: sorted set id per point.
        batch_size: number of sets B.
        link: sorted unique ``(point, previous-stage point it pooled)`` pairs within sets.
        stride: pixel sets: ``(row, col)`` pixels per lattice cell of this stage; else None.
        image_size: pixel sets: ``(H, W)`` of the images; ``cells`` is then the stage's lattice
            in the image plane, ``(cell_size, origin)`` (:func:`~pointctx.ops.grid.plane_cells`).
        coords: pixel sets: every point's ``(row, col)`` on this stage's lattice.
        grid_size: pixel sets: this stage's lattice ``(rows, cols)``.

    Shapes:
        pos: [M, D]; x: [M, C]; batch: [M]; link: [2, E].
    """

    def __init__(self, pos: Tensor, x: Tensor, batch: Tensor, batch_size: int, link: Tensor,
                 stride: tuple[int, int] | None = None, image_size: tuple[int, int] | None = None,
                 ptr: Tensor | None = None, coords: Tensor | None = None,
                 grid_size: tuple[int, int] | None = None):
        super().__init__(pos, x, batch=batch, ptr=ptr, batch_size=batch_size, validate=False)
        self.link, self._size, self.coords, self.grid_size = link, image_size, coords, grid_size
        self.stride = None if stride is None else tuple(int(s) for s in stride)
        self.cells = None if image_size is None else plane_cells(self.stride, image_size)

    def parents(self) -> tuple[Tensor, Tensor]:
        """The link as CSR ``(ptr [M+1], parent [E])``."""
        counts = torch.bincount(self.link[0], minlength=self.num_points)
        ptr = torch.zeros(self.num_points + 1, dtype=torch.long, device=self.link.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        return ptr, self.link[1]

    def _replace(self, **fields) -> PointBatch:
        kw = dict(pos=self.pos, x=self.x, batch=self.batch, ptr=self.ptr, link=self.link)
        kw.update(fields)
        if kw.get("pixel") is not None:  # a stage never carries pixel info
            return super()._replace(**fields)
        return StageBatch(kw["pos"], kw["x"], kw["batch"], self.num_sets, kw["link"],
                          self.stride, self._size, ptr=kw["ptr"], coords=self.coords,
                          grid_size=self.grid_size)

    def to(self, device=None, dtype: torch.dtype | None = None, non_blocking: bool = False):
        """Move to ``device`` / cast ``pos`` and ``x``; the link moves along."""
        out = super().to(device, dtype, non_blocking)
        out.link = self.link.to(device=device, non_blocking=non_blocking)
        return out

    def __repr__(self) -> str:
        base = super().__repr__()[len("PointBatch("):-1]
        return f"StageBatch({base}, links={self.link.shape[1]}, stride={self.stride})"

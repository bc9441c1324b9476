"""Clustering maps: colour every input pixel / point by the cluster it ends up in."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, is_int, optional_import
from .._files import atomic_output
from .trace import ClusterLayer, ClusterTrace, local_labels

__all__ = ["MISSING_COLOR", "INPUT_MISSING_COLOR", "label_colors", "colorize_labels",
           "point_labels", "label_images", "input_images", "save_cluster_grid",
           "save_cluster_scatter", "save_cluster_ply", "save_figure"]

#: Colour of pixels that hold no point in cluster maps.
MISSING_COLOR = (0, 0, 0)
#: Colour of dropped pixels in input panels.
INPUT_MISSING_COLOR = (40, 70, 150)
_GOLDEN = 0.6180339887498949


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.empty(h.shape + (3,), dtype=np.float64)
    for k, (r, g, b) in enumerate(table):
        sel = i == k
        out[sel, 0], out[sel, 1], out[sel, 2] = r[sel], g[sel], b[sel]
    return out


def label_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours for labels ``0 .. n-1``.

    Shapes:
        return: [n, 3] uint8.
    """
    n = check_int(n, "n", 0, type_error=ValueError)
    if n > 256 ** 3 - 2:
        raise ValueError(f"`n` must be at most {256 ** 3 - 2} (distinct 8-bit colours), got {n}")
    idx = np.arange(n, dtype=np.float64)
    hue = (idx * _GOLDEN) % 1.0
    sat = np.array([0.85, 0.55, 1.0, 0.7])[np.arange(n) % 4]
    val = np.array([0.95, 0.8, 0.7, 1.0, 0.87])[(np.arange(n) // 4) % 5]
    rgb = np.round(_hsv_to_rgb(hue, sat, val) * 255).astype(np.int64)
    used = {MISSING_COLOR, INPUT_MISSING_COLOR}
    out = np.empty((n, 3), dtype=np.uint8)
    for k in range(n):
        c = tuple(int(v) for v in rgb[k])
        step = 0
        while c in used:  # deterministic walk to a free colour
            step += 1
            c = ((c[0] + step) % 256, (c[1] + 3 * step) % 256, (c[2] + 7 * step) % 256)
        used.add(c)
        out[k] = c
    return out


def colorize_labels(labels, missing=MISSING_COLOR) -> np.ndarray:
    """Map integer labels (``>= 0``; -1 = no point) to :func:`label_colors` RGB values.

    Shapes:
        labels: any shape [...]; return: [..., 3] uint8.
    """
    lab = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"`labels` must be integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    top = int(lab.max()) + 1 if lab.size else 0
    palette = label_colors(max(top, 0))
    out = np.empty(lab.shape + (3,), dtype=np.uint8)
    out[...] = np.asarray(missing, dtype=np.uint8)
    has = lab >= 0
    out[has] = palette[lab[has]]
    return out


def _resolve_layer(trace: ClusterTrace, layer) -> ClusterLayer:
    return layer if isinstance(layer, ClusterLayer) else trace.layer(layer)


def _check_head(layer: ClusterLayer, head: int) -> int:
    check_int(head, "head")
    if not 0 <= head < layer.heads:
        raise ValueError(f"`head` must be in [0, {layer.heads}) for layer {layer.name!r}, "
                         f"got {head}")
    return int(head)


def point_labels(trace: ClusterTrace, layer=-1, head: int = 0) -> Tensor:
    """Per-set cluster labels of the input points for one traced layer and head.

    Args:
        trace: a :class:`~pointctx.viz.trace.ClusterTrace`.
        layer: a :class:`~pointctx.viz.trace.ClusterLayer`, an index or a module name.
        head: the head.

    Shapes:
        return: [N].
    """
    lay = _resolve_layer(trace, layer)
    head = _check_head(lay, head)
    return local_labels(lay.cluster[:, head], trace.batch)


def _require_pixels(trace: ClusterTrace) -> tuple[int, int]:
    if trace.pixel is None or trace.image_size is None:
        raise ValueError(
            "this trace has no pixel grid (its inputs were not an image tensor or a PointBatch "
            "with pixel / image_size); draw it with save_cluster_scatter or save_cluster_ply")
    return trace.image_size


def label_images(trace: ClusterTrace, layer=-1, head: int = 0) -> Tensor:
    """Cluster labels scattered onto the pixel grid (``-1`` where a pixel holds no point).

    Shapes:
        return: [B, H, W] int64.
    """
    h, w = _require_pixels(trace)
    lab = point_labels(trace, layer, head)
    out = torch.full((trace.batch_size, h * w), -1, dtype=torch.long, device=lab.device)
    out[trace.batch, trace.pixel] = lab
    return out.view(trace.batch_size, h, w)


def _as_rgb(images: Tensor) -> np.ndarray:
    img = images.detach().float().cpu()
    if img.dim() != 4 or img.shape[1] not in (1, 3):
        raise ValueError(f"`images` must have shape [B, 1 or 3, H, W], got {tuple(images.shape)}")
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    lo = img.amin(dim=(1, 2, 3), keepdim=True)
    hi = img.amax(dim=(1, 2, 3), keepdim=True)
    outside = (lo < 0) | (hi > 1)  # not in [0, 1]: stretch per image for display
    scaled = (img - lo) / (hi - lo).clamp_min(1e-12)
    img = torch.where(outside, scaled, img).clamp(0, 1)
    return (img.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def input_images(trace: ClusterTrace, images: Tensor) -> np.ndarray:
    """Display images of the inputs with dropped pixels in :data:`INPUT_MISSING_COLOR`.

    Args:
        trace: the trace (its pixels say which pixels were kept).
        images: full images ``[B, 1 or 3, H, W]`` (outside [0, 1]: stretched per image).

    Shapes:
        return: [B, H, W, 3] uint8.
    """
    h, w = _require_pixels(trace)
    rgb = _as_rgb(images)
    if rgb.shape[0] != trace.batch_size or rgb.shape[1:3] != (h, w):
        raise ValueError(f"`images` must have shape [B, C, H, W] with B = {trace.batch_size}, H x "
                         f"W = {h} x {w} (the trace's), got {tuple(images.shape)}")
    kept = np.zeros((trace.batch_size, h * w), dtype=bool)
    kept[trace.batch.cpu().numpy(), trace.pixel.cpu().numpy()] = True
    rgb = rgb.reshape(trace.batch_size, h * w, 3).copy()
    rgb[~kept] = INPUT_MISSING_COLOR
    return rgb.reshape(trace.batch_size, h, w, 3)


def _import_mpl():
    need = ("drawing clustering maps", "matplotlib (or pointctx[images])")
    return (optional_import("matplotlib.figure", *need).Figure,
            optional_import("matplotlib.backends.backend_agg", *need).FigureCanvasAgg)


def _atomic_replace(path: Path, write) -> Path:
    """Run ``write(tmp_path)`` then rename the temporary file to ``path``."""
    return atomic_output(path, write)


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Write a matplotlib ``Figure`` as a PNG file atomically (Agg canvas, no pyplot).

    Args:
        fig: a ``matplotlib.figure.Figure``.
        path: output file (parent folders are created).
        dpi: resolution.
    """
    _, canvas_cls = _import_mpl()
    if fig.canvas is None or not isinstance(fig.canvas, canvas_cls):
        canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)

    def write(tmp: Path) -> None:
        tmp.write_bytes(buf.getvalue())

    return _atomic_replace(Path(path), write)


def _pick_layers(trace: ClusterTrace, layers) -> list[ClusterLayer]:
    if layers is None or (isinstance(layers, str) and layers in ("last", "first")):
        return trace.stage_layers(layers or "last")
    if isinstance(layers, str) and layers == "all":
        return list(trace.layers)
    if isinstance(layers, (str, int, ClusterLayer)):
        layers = [layers]
    return [_resolve_layer(trace, key) for key in layers]


def _pick_heads(layer: ClusterLayer, heads) -> list[int]:
    if heads is None or (isinstance(heads, str) and heads == "all"):
        return list(range(layer.heads))
    if is_int(heads):
        heads = [heads]
    return [_check_head(layer, h) for h in heads if 0 <= h < layer.heads] or [0]


def _pick_sets(trace: ClusterTrace, sets, limit: int) -> list[int]:
    if sets is None:
        return list(range(min(trace.batch_size, limit)))
    out = []
    for s in sets:
        if not 0 <= int(s) < trace.batch_size:
            raise ValueError(f"`sets` entries must be in [0, {trace.batch_size}), got {s}")
        out.append(int(s))
    return out


def _layer_title(layer: ClusterLayer, head: int) -> str:
    return f"stage {layer.stage + 1} · head {head}"


def save_cluster_grid(path, trace: ClusterTrace, images: Tensor | None = None, layers=None, heads=0,
                      sets: Sequence[int] | None = None, max_sets: int = 8, rows: str = "sets",
                      row_labels: Sequence[str] | None = None, title: str | None = None,
                      cell_inches: float = 1.8, dpi: int = 100) -> Path:
    """Write a PNG grid of clustering maps of pixel sets.

    Args:
        path: output PNG file.
        trace: a :class:`~pointctx.viz.trace.ClusterTrace` of pixel-set inputs.
        images: full images ``[B, 1 or 3, H, W]`` for an input column.
        layers: None / ``"last"`` (per stage), ``"first"``, ``"all"``, or indices, names, layers.
        heads: an int, a list of ints or ``"all"``.
        sets: which sets to draw (default the first ``max_sets``).
        max_sets: cap when ``sets`` is None.
        rows: ``"sets"`` (a row per set) or ``"heads"`` (one set, a row per head).
        row_labels: text per row.
        title: figure title.
        cell_inches: size of one panel.
        dpi: resolution.
    """
    if rows not in ("sets", "heads"):
        raise ValueError(f"`rows` must be 'sets' or 'heads', got {rows!r}")
    h, w = _require_pixels(trace)
    lays = _pick_layers(trace, layers)
    chosen = _pick_sets(trace, sets, max_sets)
    inputs = None if images is None else input_images(trace, images)
    if rows == "sets":
        columns = [(lay, hd) for lay in lays for hd in _pick_heads(lay, heads)]
        grid = [[(s, lay, hd) for lay, hd in columns] for s in chosen]
        col_titles = [_layer_title(lay, hd) for lay, hd in columns]
        first_set = chosen
    else:
        s = chosen[0]
        head_lists = [_pick_heads(lay, heads) for lay in lays]
        all_heads = sorted({hd for hl in head_lists for hd in hl})
        grid = [[(s, lay, hd) if hd in hl else None for lay, hl in zip(lays, head_lists)]
                for hd in all_heads]
        col_titles = [f"stage {lay.stage + 1}" for lay in lays]
        first_set = [s] * len(all_heads)
        if row_labels is None:
            row_labels = [f"head {hd}" for hd in all_heads]
    if row_labels is not None and len(row_labels) != len(grid):
        raise ValueError(f"`row_labels` must have one entry per row ({len(grid)}), got "
                         f"{len(row_labels)}")
    maps: dict[tuple[int, int], np.ndarray] = {}
    for lay in lays:
        for hd in range(lay.heads):
            key = (id(lay), hd)
            if any(c is not None and c[1] is lay and c[2] == hd for r in grid for c in r):
                maps[key] = label_images(trace, lay, hd).cpu().numpy()
    n_rows = len(grid)
    n_cols = len(grid[0]) + (inputs is not None)
    figure_cls, _ = _import_mpl()
    aspect = h / w
    fig = figure_cls(figsize=(cell_inches * n_cols,
                              cell_inches * aspect * n_rows + 0.35 * n_rows + 0.6),
                     layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(grid):
        c0 = 0
        if inputs is not None:
            ax = axes[r][0]
            if rows == "sets" or r == 0:
                ax.imshow(inputs[first_set[r]], interpolation="nearest")
                kept = int((trace.batch == first_set[r]).sum())
                ax.set_xlabel(f"{kept} / {h * w} px", fontsize=7)
            if r == 0:
                ax.set_title("input", fontsize=8)
            c0 = 1
        if row_labels is not None:
            axes[r][0].set_ylabel(str(row_labels[r]), fontsize=8)
        for c, cell in enumerate(row):
            ax = axes[r][c0 + c]
            if r == 0:
                ax.set_title(col_titles[c], fontsize=8)
            if cell is None:
                continue
            s, lay, hd = cell
            lab = maps[(id(lay), hd)][s]
            ax.imshow(colorize_labels(lab), interpolation="nearest")
            ax.set_xlabel(f"{int(lab.max()) + 1} clusters", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    note = "clustering maps: colour = cluster (per image); black = no point"
    if inputs is not None:
        note += "; blue in input = dropped pixel"
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=9)
    return save_figure(fig, Path(path), dpi)


def _subsample(n: int, max_points: int | None, seed: int) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def save_cluster_scatter(path, trace: ClusterTrace, layers=None, head: int = 0, set_index: int = 0,
                         pos: Tensor | None = None, colors=None, max_points: int | None = 60000,
                         view: tuple[float, float] = (20.0, -60.0), point_size: float | None = None,
                         title: str | None = None, seed: int = 0, cell_inches: float = 4.0,
                         dpi: int = 100) -> Path:
    """Write a PNG of scatter plots of one point set, coloured by cluster (one panel per layer).

    Args:
        path: output PNG file.
        trace: a :class:`~pointctx.viz.trace.ClusterTrace`.
        layers: as for :func:`save_cluster_grid`.
        head: the head shown.
        set_index: which set of the batch.
        pos: positions to plot instead of ``trace.pos`` (2-D or 3-D, input order).
        colors: original colours of the points for a first panel.
        max_points: plot a seeded random subset of at most this many points.
        view: ``(elevation, azimuth)`` of the 3-D panels.
        point_size: marker size (default: by point count).
        title: figure title.
        seed: seed of the subset.
        cell_inches: size of one panel.
        dpi: resolution.

    Shapes:
        pos: [N, 2 or 3]; colors: [N, 3].
    """
    lays = _pick_layers(trace, layers)
    if not 0 <= set_index < trace.batch_size:
        raise ValueError(f"`set_index` must be in [0, {trace.batch_size}), got {set_index}")
    p = trace.pos if pos is None else pos
    if not isinstance(p, Tensor) or p.dim() != 2 or p.shape[0] != trace.batch.shape[0]:
        raise ValueError(
            f"`pos` must be a tensor [N, D] with N = {trace.batch.shape[0]} (the trace's input "
            f"points), got {tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__}")
    if p.shape[1] not in (2, 3):
        raise ValueError(f"`pos` must be 2-D or 3-D to plot, got D = {p.shape[1]}")
    sel = (trace.batch == set_index).nonzero().view(-1).cpu().numpy()
    pick = sel[_subsample(sel.size, max_points, seed)]
    xyz = p.detach().float().cpu().numpy()[pick]
    panels = []
    if colors is not None:
        col = colors.detach().cpu().numpy() if isinstance(colors, Tensor) else np.asarray(colors)
        if col.ndim != 2 or col.shape != (trace.batch.shape[0], 3):
            raise ValueError(f"`colors` must have shape [N, 3] = [{trace.batch.shape[0]}, 3], got "
                             f"{list(col.shape)}")
        col = col[pick]
        col = col.astype(np.float64) / 255.0 if col.dtype == np.uint8 else col.clip(0, 1)
        panels.append(("input colours", col))
    for lay in lays:
        hd = _check_head(lay, min(head, lay.heads - 1))
        lab = point_labels(trace, lay, hd).cpu().numpy()
        k = int(lab[sel].max()) + 1 if sel.size else 0
        panels.append((f"{_layer_title(lay, hd)} ({k} clusters)",
                       colorize_labels(lab[pick]).astype(np.float64) / 255.0))
    if point_size is None:
        point_size = float(np.clip(3000.0 / max(len(pick), 1), 0.3, 8.0))
    figure_cls, _ = _import_mpl()
    n = len(panels)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = figure_cls(figsize=(cell_inches * ncols, cell_inches * nrows + 0.6), layout="constrained")
    three = xyz.shape[1] == 3
    for i, (name, col) in enumerate(panels):
        if three:
            ax = fig.add_subplot(nrows, ncols, i + 1, projection="3d")
            ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=col, s=point_size, linewidths=0,
                       depthshade=False)
            ax.view_init(elev=view[0], azim=view[1])
            ax.set_box_aspect(np.ptp(xyz, axis=0).clip(min=1e-9) if len(xyz) else None, zoom=1.3)
            ax.set_axis_off()
        else:
            ax = fig.add_subplot(nrows, ncols, i + 1)
            ax.scatter(xyz[:, 0], xyz[:, 1], c=col, s=point_size, linewidths=0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(name, fontsize=8)
    note = f"{len(pick)} of {sel.size} points; colour = cluster"
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=9)
    return save_figure(fig, Path(path), dpi)


def save_cluster_ply(path, trace: ClusterTrace, layer=-1, head: int = 0, set_index: int = 0,
                     pos: Tensor | None = None, all_layers: bool = True,
                     binary: bool = True) -> Path:
    """Write one point set as a PLY file coloured by cluster (:func:`pointctx.io.write_ply`).

    Args:
        path: output ``.ply`` file.
        trace: a :class:`~pointctx.viz.trace.ClusterTrace`.
        layer: the layer (index, name or layer) that colours the points.
        head: the head that colours the points.
        set_index: which set of the batch.
        pos: 3-D positions to write instead of ``trace.pos``.
        all_layers: also store the labels of every stage and head.
        binary: binary (default) or ASCII PLY.

    Shapes:
        pos: [N, 3].
    """
    from ..io import write_ply

    if not 0 <= set_index < trace.batch_size:
        raise ValueError(f"`set_index` must be in [0, {trace.batch_size}), got {set_index}")
    p = trace.pos if pos is None else pos
    if not isinstance(p, Tensor) or p.dim() != 2 or p.shape != (trace.batch.shape[0], 3):
        raise ValueError(
            f"`pos` must be a tensor [N, 3] with N = {trace.batch.shape[0]} (the trace's input "
            f"points), got {tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__}")
    sel = (trace.batch == set_index).nonzero().view(-1)
    lab = point_labels(trace, layer, head).index_select(0, sel)
    fields = {"cluster": lab.to(torch.int32).cpu()}
    if all_layers:
        for lay in trace.stage_layers("last"):
            for hd in range(lay.heads):
                other = point_labels(trace, lay, hd).index_select(0, sel)
                fields[f"stage{lay.stage + 1}_head{hd}"] = other.to(torch.int32).cpu()
    xyz = p.detach().index_select(0, sel).float().cpu()
    rgb = colorize_labels(lab)
    comments = [f"pointctx clustering map: colour = cluster of layer "
                f"{_resolve_layer(trace, layer).name} head {head}"]

    def write(tmp: Path) -> None:
        write_ply(tmp, xyz, rgb=rgb, fields=fields, binary=binary, comments=comments)

    return _atomic_replace(Path(path), write)

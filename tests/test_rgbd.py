"""pointctx.rgbd: back-projection by hand, against Open3D on real frames, poses, bad input."""

import math

import numpy as np
import pytest
import torch
from _cli import SAMPLES

import pointctx
from pointctx.datasets import data_root
from pointctx.datasets.rgbd import read_color, read_depth, rgbd_frame
from pointctx.rgbd import (
    PinholeIntrinsics,
    RGBDPoints,
    as_intrinsics,
    depth_to_metres,
    pose_matrix,
    read_intrinsics,
    rgbd_to_points,
    transform_points,
    valid_depth_mask,
)

K = (100.0, 120.0, 1.5, 2.0)  # fx, fy, cx, cy


def _tiny():
    """A 4x5 frame with known depths (mm): zeros are invalid."""
    depth = np.array(
        [
            [0, 1000, 2000, 0, 500],
            [1500, 0, 0, 3000, 250],
            [1000, 1000, 1000, 1000, 1000],
            [0, 0, 4000, 0, 0],
        ],
        dtype=np.uint16,
    )
    color = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    return color, depth


def _by_hand(depth_m, row, col, k=K):
    fx, fy, cx, cy = k
    z = depth_m
    return [(col - cx) * z / fx, (row - cy) * z / fy, z]


def test_tiny_frame_matches_hand_computation():
    color, depth = _tiny()
    out = pointctx.rgbd_to_points(color, depth, K)
    assert isinstance(out, RGBDPoints)
    valid = np.flatnonzero(depth.reshape(-1) > 0)
    assert out.pixel.tolist() == valid.tolist()  # row-major, invalid skipped
    assert out.xyz.dtype == torch.float32 and out.xyz.shape == (len(valid), 3)
    for n, p in enumerate(valid):
        row, col = divmod(int(p), 5)
        expect = _by_hand(depth[row, col] / 1000.0, row, col)
        assert out.xyz[n].tolist() == pytest.approx(expect, abs=1e-6)
        assert out.rgb[n].tolist() == pytest.approx((color[row, col] / 255.0).tolist(), abs=1e-7)
    # one pixel spelled out: row 1, col 3, 3000 mm -> x = (3 - 1.5) * 3 / 100, y = (1 - 2) * 3 / 120
    n = out.pixel.tolist().index(1 * 5 + 3)
    assert out.xyz[n].tolist() == pytest.approx([0.045, -0.025, 3.0], abs=1e-6)


def test_scale_trunc_and_float_depth():
    color, depth = _tiny()
    a = rgbd_to_points(color, depth, K, depth_scale=5000.0)
    assert a.xyz[:, 2].max().item() == pytest.approx(4000 / 5000.0)
    t = rgbd_to_points(color, depth, K, depth_trunc=1.5)  # keeps z <= 1.5 m (inclusive)
    z = depth.reshape(-1) / 1000.0
    assert t.pixel.tolist() == np.flatnonzero((z > 0) & (z <= 1.5)).tolist()
    # float depth is taken as metres by default; NaN / Inf / negative are invalid
    dm = depth.astype(np.float32) / 1000.0
    dm[0, 0], dm[0, 3], dm[3, 0] = np.nan, np.inf, -1.0
    f = rgbd_to_points(color, dm, K)
    assert f.pixel.tolist() == a.pixel.tolist()
    assert torch.allclose(f.xyz, rgbd_to_points(color, depth, K).xyz, atol=1e-6)
    # explicit scale divides float depth too
    g = rgbd_to_points(color, dm * 1000.0, K, depth_scale=1000.0)
    assert torch.allclose(g.xyz, f.xyz, atol=1e-5)
    # float colours in [0, 1] pass through
    h = rgbd_to_points(color.astype(np.float64) / 255.0, depth, K)
    assert torch.allclose(h.rgb, f.rgb, atol=1e-7)
    assert valid_depth_mask(dm).sum().item() == len(f.pixel)
    assert depth_to_metres(depth)[2, 0].item() == 1.0


def test_torch_inputs_matrix_and_dtype():
    color, depth = _tiny()
    a = rgbd_to_points(color, depth, K)
    km = np.array([[100.0, 0, 1.5], [0, 120.0, 2.0], [0, 0, 1]])
    b = rgbd_to_points(torch.from_numpy(color), torch.from_numpy(depth), torch.from_numpy(km))
    assert torch.equal(a.xyz, b.xyz) and torch.equal(a.pixel, b.pixel)
    c = rgbd_to_points(color, depth, PinholeIntrinsics(*K, width=5, height=4), dtype=torch.float64)
    assert c.xyz.dtype == torch.float64 and torch.allclose(c.xyz.float(), a.xyz)
    j = {"width": 5, "height": 4, "intrinsic_matrix": km.T.reshape(-1).tolist()}
    assert as_intrinsics(j) == PinholeIntrinsics(*K, 5, 4)


def test_errors():
    color, depth = _tiny()
    with pytest.raises(ValueError, match="same size"):
        rgbd_to_points(color[:3], depth, K)
    with pytest.raises(ValueError, match="uint16.*got dtype uint8"):
        rgbd_to_points(color, depth.astype(np.uint8), K)
    with pytest.raises(ValueError, match="got dtype int32"):
        rgbd_to_points(color, depth.astype(np.int32), K)
    with pytest.raises(ValueError, match="intrinsics` is required"):
        rgbd_to_points(color, depth, None)
    with pytest.raises(ValueError, match=r"shape \[4\].*got shape \[3\]"):
        rgbd_to_points(color, depth, (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"got shape \[2, 3\]"):
        rgbd_to_points(color, depth, np.ones((2, 3)))
    with pytest.raises(ValueError, match="skew"):
        rgbd_to_points(color, depth, [[100.0, 1.0, 1.5], [0, 120.0, 2.0], [0, 0, 1]])
    with pytest.raises(ValueError, match="focal lengths must be > 0"):
        rgbd_to_points(color, depth, (0.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="for a 640x480"):
        rgbd_to_points(color, depth, PinholeIntrinsics(*K, width=640, height=480))
    with pytest.raises(ValueError, match="no valid pixel"):
        rgbd_to_points(color, np.zeros_like(depth), K)
    with pytest.raises(ValueError, match="beyond depth_trunc"):
        rgbd_to_points(color, depth, K, depth_trunc=0.1)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        rgbd_to_points(np.zeros((3, 4, 5), np.uint8), depth, K)
    with pytest.raises(ValueError, match="depth_scale"):
        rgbd_to_points(color, depth, K, depth_scale=0.0)
    with pytest.raises(TypeError, match="numpy array or torch.Tensor"):
        rgbd_to_points(color, depth.tolist(), K)


# --------------------------------------------------------------------------- real frames
def _tum():
    root = SAMPLES / "rgbd_sample"
    color = read_color(root / "TUM_color.png")
    depth = read_depth(root / "TUM_depth.png")
    return color, depth, read_intrinsics(root / "camera_primesense.json")


def test_real_tum_pixels_by_hand():
    color, depth, k = _tum()
    assert k == PinholeIntrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    out = rgbd_to_points(color, depth, k, depth_scale=5000.0, dtype=torch.float64)
    assert len(out.pixel) == int((depth > 0).sum())
    for row, col in [(0, 0), (240, 320), (479, 639), (100, 500)]:
        if depth[row, col] == 0:
            assert (out.pixel == row * 640 + col).sum() == 0
            continue
        n = int((out.pixel == row * 640 + col).nonzero()[0, 0])
        z = depth[row, col] / 5000.0
        expect = [(col - 319.5) * z / 525.0, (row - 239.5) * z / 525.0, z]
        assert out.xyz[n].tolist() == pytest.approx(expect, abs=1e-12)
        assert out.rgb[n].tolist() == pytest.approx((color[row, col] / 255.0).tolist())


def _o3d_points(o3d, color, depth, k, scale, trunc, sun=False):
    c, d = o3d.geometry.Image(np.ascontiguousarray(color)), o3d.geometry.Image(depth)
    make = (
        o3d.geometry.RGBDImage.create_from_sun_format
        if sun
        else o3d.geometry.RGBDImage.create_from_color_and_depth
    )
    kw = {} if sun else {"depth_scale": scale, "depth_trunc": trunc}  # SUN: fixed 1000, < 7 m
    rgbd = make(c, d, convert_rgb_to_intensity=False, **kw)
    cam = o3d.camera.PinholeCameraIntrinsic(
        depth.shape[1], depth.shape[0], k.fx, k.fy, k.cx, k.cy
    )
    pc = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, cam)
    return np.asarray(pc.points), np.asarray(pc.colors)


@pytest.mark.parametrize("trunc", [None, 2.9999])
def test_matches_open3d_tum(trunc):
    o3d = pytest.importorskip("open3d")
    color, depth, k = _tum()
    ours = rgbd_to_points(color, depth, k, depth_scale=5000.0, depth_trunc=trunc)
    pts, cols = _o3d_points(o3d, color, depth, k, 5000.0, 1e6 if trunc is None else trunc)
    assert pts.shape == tuple(ours.xyz.shape)
    assert np.abs(pts - ours.xyz.numpy()).max() < 1e-4
    assert np.abs(cols - ours.rgb.numpy()).max() < 1e-6
    if trunc is not None:  # Open3D's default truncation (3.0 m) would have dropped points too
        assert ours.xyz[:, 2].max() <= trunc


def _shared_rgbd():
    root = data_root(must_exist=False) / "rgbd"
    if not root.is_dir():
        pytest.skip(f"shared RGB-D data not found at {root}")
    return root


def test_matches_open3d_sun():
    o3d = pytest.importorskip("open3d")
    root = _shared_rgbd()
    color = read_color(root / "SUN_color.jpg")
    raw = read_depth(root / "SUN_depth.png", layout="plain")  # Open3D decodes the bit layout
    decoded = read_depth(root / "SUN_depth.png", layout="sun")
    k = read_intrinsics(root / "camera_primesense.json")
    # Open3D's SUN reader always scales by 1000 and drops z >= 7 m
    ours = rgbd_to_points(color, decoded, k, depth_scale=1000.0, depth_trunc=6.9999)
    pts, cols = _o3d_points(o3d, color, raw, k, 1000.0, None, sun=True)
    assert len(rgbd_to_points(color, decoded, k).pixel) > len(pts)  # the SUN frame goes past 7 m
    assert pts.shape == tuple(ours.xyz.shape)
    assert np.abs(pts - ours.xyz.numpy()).max() < 1e-4
    assert np.abs(cols - ours.rgb.numpy()).max() < 1e-6


def test_matches_open3d_kinect():
    o3d = pytest.importorskip("open3d")
    _shared_rgbd()
    fr = rgbd_frame("kinect", 3)
    ours = rgbd_to_points(fr.color, fr.depth, fr.intrinsics, fr.depth_scale)
    pts, cols = _o3d_points(
        o3d, fr.color, fr.depth, fr.intrinsics, fr.depth_scale, 1e6
    )
    assert pts.shape == tuple(ours.xyz.shape)
    assert np.abs(pts - ours.xyz.numpy()).max() < 1e-4


# --------------------------------------------------------------------------- poses
def test_pose_matrix_by_hand():
    assert torch.equal(pose_matrix([0, 0, 0, 0, 0, 0, 1]), torch.eye(4, dtype=torch.float64))
    s = math.sqrt(0.5)  # 90 degrees about z: x -> y
    t = pose_matrix([1.0, 2.0, 3.0, 0.0, 0.0, s, s])
    out = transform_points(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]), t)
    assert out.tolist() == [pytest.approx([1.0, 3.0, 3.0]), pytest.approx([1.0, 2.0, 5.0])]
    # unnormalised quaternions are normalised
    assert torch.allclose(pose_matrix([1.0, 2.0, 3.0, 0.0, 0.0, 2 * s, 2 * s]), t)
    assert torch.equal(pose_matrix(t), t)


def test_pose_matrix_matches_open3d():
    o3d = pytest.importorskip("open3d")
    q = np.array([-0.00662576, -0.278681, -0.0736078, 0.957536])  # x y z w
    q = q / np.linalg.norm(q)
    r = o3d.geometry.get_rotation_matrix_from_quaternion(q[[3, 0, 1, 2]])  # Open3D: w x y z
    t = pose_matrix([0.1, 0.2, 0.3, *q]).numpy()
    assert np.abs(t[:3, :3] - r).max() < 1e-12
    assert np.abs(t[:3, :3] @ t[:3, :3].T - np.eye(3)).max() < 1e-12


def test_pose_errors():
    with pytest.raises(ValueError, match="non-zero"):
        pose_matrix([0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"shape \[7\]"):
        pose_matrix([0, 0, 0, 1])
    with pytest.raises(ValueError, match="last row|end in the row"):
        pose_matrix(np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        transform_points(torch.zeros(3, 2), np.eye(4))


def test_float_depth_in_millimetres_and_colour_in_0_255_are_refused():
    from pointctx import rgbd_to_points

    depth_mm = np.full((4, 5), 1500.0, dtype=np.float32)
    depth_mm[0, 0] = 46655.0
    rgb = np.full((4, 5, 3), 0.5, dtype=np.float32)
    k = (2.0, 2.0, 2.0, 1.5)
    with pytest.raises(ValueError, match=r"floating point `depth` is taken as metres, but it "
                       r"reaches 46655 m .* pass depth_scale=1000"):
        rgbd_to_points(rgb, depth_mm, k)
    out = rgbd_to_points(rgb, depth_mm, k, depth_scale=1000.0)  # millimetres, said so
    assert float(out.xyz[:, 2].max()) == pytest.approx(46.655)
    with pytest.raises(ValueError, match=r"`color` is floating point with values in "
                       r"\[254, 254\]: floating point colour must lie in \[0, 1\]"):
        rgbd_to_points(np.full((4, 5, 3), 254.0, dtype=np.float32), depth_mm / 1000, k)
    ok = rgbd_to_points(rgb, depth_mm / 1000, k)
    assert torch.allclose(ok.rgb, torch.full_like(ok.rgb, 0.5))

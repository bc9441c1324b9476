"""pointctx.datasets.rgbd: readers, presets on the real frames, fusion with poses, bad input."""

import functools
import json
import math

import numpy as np
import pytest
import torch
from _cli import SAMPLES
from PIL import Image

import pointctx
from pointctx.datasets import data_root
from pointctx.datasets.rgbd import (
    KINECT_INTRINSICS,
    RGBDDataset,
    RGBDFrame,
    frame_to_points,
    fuse_frames,
    load_rgbd,
    read_color,
    read_depth,
    read_poses,
    rgbd_frame,
    rgbd_frames,
)
from pointctx.io import read_ply, write_ply
from pointctx.rgbd import PinholeIntrinsics, read_intrinsics

SAMPLE = SAMPLES / "rgbd_sample"


@pytest.fixture(scope="module")
def shared():
    root = data_root(must_exist=False) / "rgbd"
    if not root.is_dir():
        pytest.skip(f"shared RGB-D data not found at {root}")
    return root


# --------------------------------------------------------------------------- readers
def test_bundled_tum_frame():
    fr = rgbd_frame("tum", root=SAMPLE)
    assert isinstance(fr, RGBDFrame) and fr.name == "tum" and fr.pose is None
    assert fr.color.dtype == np.uint8 and fr.color.shape == (480, 640, 3)
    assert fr.depth.dtype == np.uint16 and fr.size == (480, 640)
    assert fr.depth_scale == 5000.0
    assert fr.intrinsics == PinholeIntrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    pts = frame_to_points(fr)
    assert len(pts.pixel) == int((fr.depth > 0).sum())
    assert 0 < pts.xyz[:, 2].min() and pts.xyz[:, 2].max() <= 65535 / 5000.0
    # same bytes as the shared copy when it exists
    shared_dir = data_root(must_exist=False) / "rgbd"
    if shared_dir.is_dir():
        other = rgbd_frame("tum")
        assert np.array_equal(other.depth, fr.depth) and np.array_equal(other.color, fr.color)


def test_frame_as_pixel_set_of_valid_depth():
    from pointctx.transforms import PixelSet, ValidDepth

    fr = rgbd_frame("tum", root=SAMPLE)
    img = fr.to_image()
    assert img.shape == (4, 480, 640)
    assert img[3, 240, 320].item() == pytest.approx(fr.depth[240, 320] / 5000.0)
    s = PixelSet(ValidDepth(depth_trunc=4.0), image=False)(img)
    pts = frame_to_points(fr, depth_trunc=4.0)
    assert torch.equal(s["pixel"], pts.pixel)  # same pixels as the 3-D back-projection
    assert torch.allclose(s["x"][:, :3], pts.rgb) and torch.allclose(s["x"][:, 3], pts.xyz[:, 2])


def test_missing_data_folder_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTCTX_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere.*root=.*POINTCTX_DATA"):
        rgbd_frame("tum")
    monkeypatch.delenv("POINTCTX_DATA")
    with pytest.raises(FileNotFoundError, match="root=.*POINTCTX_DATA"):
        rgbd_frame("sun")
    assert rgbd_frame("tum", root=SAMPLE).size == (480, 640)


def test_read_intrinsics_column_major(tmp_path):
    k = read_intrinsics(SAMPLE / "camera_primesense.json")
    assert k == PinholeIntrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    # asymmetric values: column-major means the 7th and 8th numbers are cx, cy
    f = tmp_path / "cam.json"
    f.write_text(json.dumps({"width": 8, "height": 6,
                             "intrinsic_matrix": [500, 0, 0, 0, 510, 0, 3.5, 2.5, 1]}))
    assert read_intrinsics(f) == PinholeIntrinsics(500.0, 510.0, 3.5, 2.5, 8, 6)
    assert PinholeIntrinsics(500.0, 510.0, 3.5, 2.5, 8, 6).to_json() == json.loads(f.read_text())


def test_sun_bit_layout(shared):
    raw = np.asarray(Image.open(shared / "SUN_depth.png")).astype(np.uint16)
    dec = read_depth(shared / "SUN_depth.png", layout="sun")
    assert np.array_equal(read_depth(shared / "SUN_depth.png"), raw)
    for r, c in [(240, 320), (100, 100), (400, 600)]:
        v = int(raw[r, c])
        assert int(dec[r, c]) == ((v >> 3) | (v << 13)) & 0xFFFF
    z = dec[dec > 0] / 1000.0
    assert 0.3 < np.median(z) < 6.0 and z.max() < 12.0  # plausible indoor metres
    assert (raw[raw > 0] / 1000.0).max() > 30  # undecoded values would be nonsense


def test_pgm_depth_is_big_endian_16bit(shared):
    path = shared / "kinect" / "depth" / "1.pgm"
    data = path.read_bytes()
    header = b"P5 640 480 65535\n"
    assert data.startswith(header)
    manual = np.frombuffer(data[len(header):], dtype=">u2").reshape(480, 640)
    assert np.array_equal(read_depth(path), manual)


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", ["tum", "sun", "kinect"])
def test_presets_load_real_frames(shared, preset):
    fr = rgbd_frame(preset)
    assert fr.size == (480, 640) and tuple(fr.color.shape) == (480, 640, 3)
    pts = frame_to_points(fr, world=False)
    assert len(pts.pixel) == int((fr.depth > 0).sum()) > 100_000
    assert torch.isfinite(pts.xyz).all()
    z = pts.xyz[:, 2]
    assert 0.2 < z.median() < 6.0 and z.max() < 12.0
    if preset == "kinect":
        assert fr.intrinsics == KINECT_INTRINSICS and fr.depth_scale == 1000.0
        assert fr.pose is not None and fr.pose.shape == (4, 4) and fr.name == "kinect/1"
    else:
        assert fr.pose is None


def test_kinect_pose_by_hand(shared):
    poses = read_poses(shared / "kinect" / "pose.txt")
    assert poses.shape == (5, 7)
    fr = rgbd_frame("kinect", 2)
    row, col = 300, 200
    d = int(fr.depth[row, col])
    assert d > 0
    z = d / 1000.0
    p = np.array([(col - 325.5) * z / 518.0, (row - 253.5) * z / 519.0, z])
    tx, ty, tz, qx, qy, qz, qw = poses[1].tolist()
    # rotate by the quaternion with the vector form v' = v + 2 w (u x v) + 2 u x (u x v)
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    u, w = np.array([qx, qy, qz]) / n, qw / n
    world = p + 2 * w * np.cross(u, p) + 2 * np.cross(u, np.cross(u, p)) + [tx, ty, tz]
    fused = fuse_frames(rgbd_frames("kinect", [1, 2]))
    i = int(((fused.frame == 1) & (fused.pixel == row * 640 + col)).nonzero()[0, 0])
    assert fused.xyz[i].double().numpy() == pytest.approx(world, abs=1e-5)
    single = frame_to_points(fr)  # world=True applies the same pose
    j = int((single.pixel == row * 640 + col).nonzero()[0, 0])
    assert torch.equal(single.xyz[j], fused.xyz[i])


def _near_fraction(query, ref, radius=0.05, nq=1500, nr=30000, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = query[torch.randperm(len(query), generator=g)[:nq]]
    r = ref[torch.randperm(len(ref), generator=g)[:nr]]
    d = torch.cat([torch.cdist(c, r).min(1).values for c in q.split(250)])
    return float((d < radius).float().mean()), float(d.median())


def test_fused_frames_land_consistently(shared):
    frames = rgbd_frames("kinect", [3, 4, 5])
    fused = fuse_frames(frames)
    assert fused.frame.tolist() == sorted(fused.frame.tolist())
    assert len(fused.xyz) == sum(int((f.depth > 0).sum()) for f in frames)
    for a, b in [(0, 1), (1, 2)]:
        wa, wb = fused.xyz[fused.frame == a], fused.xyz[fused.frame == b]
        near, med = _near_fraction(wb, wa)
        cam_a = frame_to_points(frames[a], world=False).xyz
        cam_b = frame_to_points(frames[b], world=False).xyz
        near_cam, _ = _near_fraction(cam_b, cam_a)
        # consecutive views overlap: most points find a neighbour within 5 cm once posed,
        # far fewer without the poses (the camera moved)
        assert near > 0.5 and med < 0.05, (near, med)
        assert near > 3 * near_cam, (near, near_cam)


def test_dataset_and_collate(shared):
    ds = RGBDDataset("kinect", frames=[1, 2])
    assert len(ds) == 2
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, collate_fn=functools.partial(pointctx.collate, point_keys=("pixel",))
    )
    batch = next(iter(loader))
    pts = batch["points"]
    assert isinstance(pts, pointctx.PointBatch) and pts.num_sets == 2
    sizes = [int((f.depth > 0).sum()) for f in ds.frames]
    assert pts.sizes.tolist() == sizes
    assert batch["pixel"].shape == (sum(sizes),)
    assert torch.equal(pts.pos[: sizes[0]], frame_to_points(ds.frames[0]).xyz)
    assert pts.x.min() >= 0 and pts.x.max() <= 1


def test_dataset_from_frames_and_trunc():
    fr = rgbd_frame("tum", root=SAMPLE)
    ds = RGBDDataset([fr], depth_trunc=2.0)
    item = ds[0]
    assert item["pos"][:, 2].max() <= 2.0
    z = fr.depth / 5000.0
    assert len(item["pixel"]) == int(((z > 0) & (z <= 2.0)).sum())
    with pytest.raises(IndexError, match="out of range"):
        ds[1]


def test_voxel_downsampling():
    ops = pytest.importorskip("pointctx.ops")
    if not hasattr(ops, "grid_pool"):
        pytest.skip("pointctx.ops.grid_pool is not available yet")
    fr = rgbd_frame("tum", root=SAMPLE)
    full = frame_to_points(fr)
    vox = frame_to_points(fr, voxel_size=0.05)
    assert vox.pixel is None and vox.rgb.shape == vox.xyz.shape
    assert 1000 < len(vox.xyz) < len(full.xyz) / 5
    # every pooled point is an average of points of one 5 cm voxel: it lies within the
    # bounding box of the full cloud, and voxel ids of pooled points are unique
    lo = full.xyz.min(0).values
    assert (vox.xyz >= lo - 1e-5).all() and (vox.xyz <= full.xyz.max(0).values + 1e-5).all()
    assert vox.rgb.min() >= 0 and vox.rgb.max() <= 1
    ds = RGBDDataset([fr], voxel_size=0.05)
    assert set(ds[0]) == {"pos", "x"}


def test_ply_round_trip_of_frame(tmp_path):
    fr = rgbd_frame("tum", root=SAMPLE)
    pts = frame_to_points(fr)
    f = write_ply(tmp_path / "tum.ply", pts.xyz, pts.rgb, fields={"pixel": pts.pixel})
    back = read_ply(f)
    assert torch.equal(back.pos, pts.xyz)
    assert torch.allclose(back.rgb, pts.rgb, atol=0.5 / 255 + 1e-7)
    assert torch.equal(back.fields["pixel"].long(), pts.pixel)


# --------------------------------------------------------------------------- bad input
def _write_pair(tmp_path, color_hw=(6, 8), depth_hw=(6, 8), depth_dtype=np.uint16, value=1000):
    c = tmp_path / "c.png"
    d = tmp_path / "d.png"
    Image.fromarray(np.full((*color_hw, 3), 90, np.uint8)).save(c)
    Image.fromarray(np.full(depth_hw, value, depth_dtype)).save(d)
    return c, d


def test_missing_files_name_the_path(tmp_path):
    c, d = _write_pair(tmp_path)
    k = (10.0, 10.0, 3.5, 2.5)
    with pytest.raises(FileNotFoundError, match="colour file .*nope.png"):
        load_rgbd(tmp_path / "nope.png", d, k)
    with pytest.raises(FileNotFoundError, match="depth file .*nada.png"):
        load_rgbd(c, tmp_path / "nada.png", k)
    with pytest.raises(FileNotFoundError, match="intrinsics file .*cam.json"):
        load_rgbd(c, d, tmp_path / "cam.json")
    with pytest.raises(FileNotFoundError, match="RGB-D folder .*missing"):
        rgbd_frame("tum", root=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="TUM_color.png"):
        rgbd_frame("tum", root=tmp_path)


def test_bad_pairs(tmp_path):
    k = (10.0, 10.0, 3.5, 2.5)
    c, d = _write_pair(tmp_path, color_hw=(6, 9))
    with pytest.raises(ValueError, match="same size"):
        load_rgbd(c, d, k)
    c, d = _write_pair(tmp_path, depth_dtype=np.uint8, value=7)
    with pytest.raises(ValueError, match="16-bit image, got Pillow mode 'L'"):
        load_rgbd(c, d, k)
    c, d = _write_pair(tmp_path)
    with pytest.raises(ValueError, match="intrinsics` is required"):
        load_rgbd(c, d, None)
    with pytest.raises(ValueError, match=r"got shape \[3\]"):
        load_rgbd(c, d, (10.0, 3.5, 2.5))
    with pytest.raises(ValueError, match="for a 640x480"):
        load_rgbd(c, d, SAMPLE / "camera_primesense.json")
    with pytest.raises(ValueError, match="8-bit colour image"):
        load_rgbd(d, d, k)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        load_rgbd(c, d, bad)
    fr = load_rgbd(c, d, k)
    assert len(frame_to_points(fr).pixel) == 48
    c, d = _write_pair(tmp_path, value=0)
    with pytest.raises(ValueError, match="no valid pixel"):
        frame_to_points(load_rgbd(c, d, k))


def test_bad_presets_and_fusion(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        rgbd_frame("nyu")
    with pytest.raises(ValueError, match="single frame"):
        rgbd_frame("tum", 2, root=SAMPLE)
    with pytest.raises(ValueError, match="has no pose"):
        fuse_frames([rgbd_frame("tum", root=SAMPLE)])
    with pytest.raises(ValueError, match="at least one"):
        fuse_frames([])
    p = tmp_path / "pose.txt"
    p.write_text("1 2 3 0 0 0\n")
    with pytest.raises(ValueError, match="line 1 must hold 7 numbers"):
        read_poses(p)


def test_bad_kinect_frame(shared):
    with pytest.raises(ValueError, match=r"one of \[1, 2, 3, 4, 5\], got 0"):
        rgbd_frame("kinect", 0)
    assert read_color(shared / "kinect" / "color" / "5.png").shape == (480, 640, 3)

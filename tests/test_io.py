"""pointctx.io: native PLY writer/reader round trips, Open3D readers, bad files."""

import numpy as np
import pytest
import torch

from pointctx.io import read_ply, read_point_cloud, write_ply, write_point_cloud


def _cloud(n=257, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g) * 3
    rgb = torch.rand(n, 3, generator=g)
    nrm = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    label = torch.randint(0, 40, (n,), generator=g)
    return pos, rgb, nrm, label


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    pos, rgb, nrm, label = _cloud()
    weight = torch.rand(len(pos), dtype=torch.float64)
    flag = label % 2 == 0
    f = write_ply(tmp_path / "a.ply", pos, rgb, nrm, binary=binary,
                  fields={"label": label, "weight": weight, "flag": flag}, comments=["hello"])
    head = f.read_bytes()[:400].decode("ascii", errors="replace")
    assert head.startswith("ply\nformat " + ("binary_little_endian" if binary else "ascii"))
    assert "comment hello" in head and "element vertex 257" in head
    assert "property uchar red" in head and "property int label" in head
    assert "property double weight" in head and "property uchar flag" in head
    back = read_ply(f)
    assert torch.equal(back.pos, pos)  # float32 round trips exactly (9 digits in ASCII)
    assert torch.equal(back.normals, nrm)
    assert torch.equal(back.rgb, (rgb * 255).round() / 255)
    assert back.fields["label"].dtype == torch.int32
    assert torch.equal(back.fields["label"].long(), label)
    assert torch.equal(back.fields["weight"], weight)
    assert torch.equal(back.fields["flag"].bool(), flag)


def test_ply_uint8_colors_double_and_empty(tmp_path):
    pos = np.array([[0.1, 0.2, 0.3], [1e-8, -2.5, 1e6]])
    rgb = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)
    f = write_ply(tmp_path / "d.ply", pos, rgb, double=True, binary=False)
    back = read_ply(f, dtype=torch.float64)
    assert back.pos.numpy().tolist() == pos.tolist()
    assert (back.rgb * 255).round().numpy().astype(np.uint8).tolist() == rgb.tolist()
    e = read_ply(write_ply(tmp_path / "e.ply", np.zeros((0, 3), np.float32)))
    assert e.pos.shape == (0, 3) and e.rgb is None and e.normals is None


def test_read_big_endian_and_faces(tmp_path):
    verts = np.array([(0.0, 1.0, 2.0, 10), (3.0, 4.0, 5.0, 20)],
                     dtype=[("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("id", ">u2")])
    head = (b"ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty float x\n"
            b"property float y\nproperty float z\nproperty ushort id\n"
            b"element face 1\nproperty list uchar int vertex_indices\nend_header\n")
    f = tmp_path / "be.ply"
    f.write_bytes(head + verts.tobytes() + b"\x03" + np.array([0, 1, 1], ">i4").tobytes())
    back = read_ply(f)
    assert back.pos.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert back.fields["id"].tolist() == [10, 20]
    # an ASCII file with a scalar element before the vertices
    g = tmp_path / "asc.ply"
    g.write_text("ply\nformat ascii 1.0\nelement camera 1\nproperty float fx\nelement vertex 2\n"
                 "property double x\nproperty double y\nproperty double z\nend_header\n"
                 "500\n1 2 3\n4 5 6\n")
    assert read_ply(g).pos.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_open3d_reads_our_ply_and_pcd(tmp_path):
    pytest.importorskip("open3d")
    pos, rgb, nrm, _ = _cloud()
    for binary in (True, False):
        f = write_ply(tmp_path / f"o{binary}.ply", pos, rgb, nrm, binary=binary)
        o = read_point_cloud(f, backend="open3d")
        assert o.fields == {}
        assert torch.allclose(o.pos, pos, atol=1e-6)
        assert torch.allclose(o.normals, nrm, atol=1e-6)
        assert torch.allclose(o.rgb, (rgb * 255).round() / 255, atol=1e-6)
        f = write_point_cloud(tmp_path / f"o{binary}.pcd", pos, rgb, nrm, binary=binary)
        p = read_point_cloud(f)
        assert torch.allclose(p.pos, pos, atol=1e-6)
        assert torch.allclose(p.normals, nrm, atol=1e-6)
        assert (p.rgb - rgb).abs().max() <= 0.5 / 255 + 1e-6  # PCD packs colours in 8 bits
    x = write_point_cloud(tmp_path / "a.xyz", pos)
    assert torch.allclose(read_point_cloud(x).pos, pos, atol=1e-5)


def test_errors(tmp_path):
    pos = torch.zeros(4, 3)
    with pytest.raises(FileNotFoundError, match="PLY file .*missing.ply"):
        read_ply(tmp_path / "missing.ply")
    with pytest.raises(FileNotFoundError, match="point-cloud file .*missing.pcd"):
        read_point_cloud(tmp_path / "missing.pcd")
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        write_ply(tmp_path / "x.ply", torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one row per point"):
        write_ply(tmp_path / "x.ply", pos, rgb=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        write_ply(tmp_path / "x.ply", torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="reserved"):
        write_ply(tmp_path / "x.ply", pos, fields={"red": torch.zeros(4)})
    with pytest.raises(ValueError, match="identifier"):
        write_ply(tmp_path / "x.ply", pos, fields={"a b": torch.zeros(4)})
    with pytest.raises(ValueError, match="int32 range"):
        write_ply(tmp_path / "x.ply", pos, fields={"big": torch.full((4,), 2**40)})
    with pytest.raises(TypeError, match="numpy array"):
        write_ply(tmp_path / "x.ply", pos.tolist())
    bad = tmp_path / "bad.ply"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="not a PLY file"):
        read_ply(bad)
    f = write_ply(tmp_path / "t.ply", torch.randn(10, 3))
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(f)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        read_point_cloud(write_ply(tmp_path / "y.ply", pos), backend="x")
    (tmp_path / "y.pcd").write_text("x")
    with pytest.raises(ValueError, match="native backend reads .ply only"):
        read_point_cloud(tmp_path / "y.pcd", backend="native")

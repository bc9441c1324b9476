"""Damaged dataset files and impossible point counts give one-line errors naming the file."""

import numpy as np
import pytest

from pointctx.datasets import MNIST, ModelNet40


def _write_modelnet(folder, points=1024, shapes=6):
    rng = np.random.default_rng(0)
    path = folder / f"modelnet40_train_{points}.npz"
    np.savez(path, points=rng.standard_normal((shapes, points, 3)).astype(np.float32),
             labels=np.arange(shapes) % 2, classes=np.array(["a", "b"]))
    return path


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


def test_truncated_npz_names_the_file_and_what_to_do(tmp_path):
    path = _write_modelnet(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"modelnet40_train_1024\.npz: cannot be read as an \.npz "
                       r"file \(BadZipFile: .*\); it is truncated or corrupt: copy or download "
                       r"it again") as err:
        ModelNet40(tmp_path)
    _one_line(err)


def test_bad_crc_npz_names_the_file(tmp_path):
    path = _write_modelnet(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the stored 'points' member: its CRC-32 no longer holds
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"modelnet40_train_1024\.npz: cannot be read as an \.npz "
                       r"file \(BadZipFile: Bad CRC-32.*copy or download it again") as err:
        ModelNet40(tmp_path)
    _one_line(err)


def test_not_an_npz_and_image_datasets_too(tmp_path):
    path = tmp_path / "mnist_train.npz"
    path.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ValueError, match=r"mnist_train\.npz: cannot be read as an \.npz file "
                       r"\(.*\); it is truncated or corrupt") as err:
        MNIST(path)
    _one_line(err)


def test_more_points_than_the_file_holds_says_how_many(tmp_path):
    _write_modelnet(tmp_path, points=1024)
    with pytest.raises(ValueError, match=r"modelnet40_train_1024\.npz holds 1024 points per "
                       r"cloud, fewer than num_points = 4096: pass num_points <= 1024") as err:
        ModelNet40(tmp_path, num_points=4096)
    _one_line(err)
    assert len(ModelNet40(tmp_path, num_points=512)) == 6  # a count the file holds still works
    # the largest file is named when several are too small
    _write_modelnet(tmp_path, points=2048)
    with pytest.raises(ValueError, match=r"modelnet40_train_2048\.npz holds 2048 points"):
        ModelNet40(tmp_path, num_points=4096)
    # one .npz file given directly says it too
    with pytest.raises(ValueError, match=r"exceeds the 1024 points stored per cloud in .*"
                       r"modelnet40_train_1024\.npz"):
        ModelNet40(tmp_path / "modelnet40_train_1024.npz", num_points=4096)

import json
import random

import numpy as np
import pytest
import torch

from pointctx.train import (
    atomic_write_json,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pointctx.train.checkpoint import _atomic_write


def test_save_and_load_roundtrip(tmp_path):
    state = {"w": torch.arange(5.0), "epoch": 3, "rng": capture_rng_state()}
    path = save_checkpoint(tmp_path / "sub" / "last.pt", state)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["last.pt"]
    back = load_checkpoint(path)
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 3
    # plain tensors, numbers and strings only: torch's safe default loader reads it
    assert torch.load(path, weights_only=True)["epoch"] == 3


def test_checkpoints_with_pickled_objects_are_refused_in_one_line(tmp_path):
    path = save_checkpoint(tmp_path / "old.pt", {"np": np.random.get_state()})
    with pytest.raises(ValueError, match=r"old.pt is not a weights-only checkpoint: it pickles "
                       r"a numpy.*object, not only tensors") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_stale_temp_files(tmp_path):
    from pointctx.train import remove_stale_temp_files, stale_temp_files

    (tmp_path / ".last.pt.abc123.pt").write_bytes(b"half")
    (tmp_path / ".results.json.x1.json").write_text("{")
    (tmp_path / "last.pt.bak").write_text("kept")
    assert [p.name for p in stale_temp_files(tmp_path)] == [".last.pt.abc123.pt",
                                                           ".results.json.x1.json"]
    assert len(remove_stale_temp_files(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt.bak"]
    assert stale_temp_files(tmp_path / "missing") == []


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"a": 1})

    def broken(f):
        f.write(b'{"half')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_json_converts_numpy_and_tensors(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"x": np.float32(0.5), "t": torch.tensor([1, 2]),
                                                   "i": np.int64(3), "nan": float("nan")})
    text = path.read_text()
    assert json.loads(text)["t"] == [1, 2] and "NaN" in text


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad.pt is damaged or not a checkpoint \(truncated, or "
                       "not written by torch.save\\)"):
        load_checkpoint(bad)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a dict checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_rng_state_roundtrip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_plain_turns_run_info_into_weights_only_values(tmp_path):
    from pathlib import Path

    from pointctx.train.checkpoint import plain

    info = {"torch": torch.__version__, "root": Path("/data"), "n": np.int64(3),
            "lr": np.float32(0.5), "shape": (3, np.int32(4)), "dtype": torch.float32,
            "arr": np.arange(2)}
    out = plain(info)
    assert out == {"torch": str(torch.__version__), "root": "/data", "n": 3, "lr": 0.5,
                   "shape": (3, 4), "dtype": "torch.float32", "arr": [0, 1]}
    assert type(out["torch"]) is str
    save_checkpoint(tmp_path / "c.pt", {"run_info": out})
    assert torch.load(tmp_path / "c.pt", weights_only=True)["run_info"]["n"] == 3
    with pytest.raises(TypeError, match="cannot store a object in a checkpoint"):
        plain({"x": object()})

"""bench/peers.py: skips with instructions without the official checkouts; its FPS stand-in."""

import subprocess
import sys
from pathlib import Path

import torch

from pointctx.ops import fps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "peers.py"


def test_skips_with_instructions_without_checkouts(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--coc-repo", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "peers.json")], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "skipped: missing coc_repo" in res.stdout
    assert "git clone https://github.com/ma-xu/Context-Cluster" in res.stdout
    assert not (tmp_path / "peers.json").exists()  # nothing measured, nothing written


def test_fps_stand_in_matches_pointctx_fps_from_point_0(load_module):
    mod = load_module(SCRIPT, "bench_peers")
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(3, 200, 3, generator=g)
    idx = mod.furthest_point_sample(xyz, 50)
    assert idx.dtype == torch.int32 and idx.shape == (3, 50)
    assert (idx[:, 0] == 0).all()  # starts at point 0, like the CUDA kernel
    batch = torch.arange(3).repeat_interleave(200)
    ref = fps(xyz.reshape(-1, 3), batch, num=50, batch_size=3) - batch.new_tensor(
        [0, 200, 400]).repeat_interleave(50)
    assert torch.equal(idx.long().reshape(-1), ref)

import numpy as np
import pytest

from pointctx.train import ResumableBatchSampler, ShardedEvalSampler, init_distributed


def test_batch_sampler_is_seeded_by_epoch():
    s = ResumableBatchSampler(50, 8, seed=3)
    s.set_epoch(0)
    a = list(s)
    assert len(a) == 6 == len(s) and all(len(b) == 8 for b in a)
    assert list(s) == a
    s.set_epoch(1)
    assert list(s) != a
    t = ResumableBatchSampler(50, 8, seed=4)
    assert list(t) != a
    flat = np.concatenate(a)
    assert len(set(flat.tolist())) == 48  # a permutation, last partial batch dropped


def test_batch_sampler_resumes_mid_epoch():
    s = ResumableBatchSampler(50, 8, seed=3, drop_last=False)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == 7 and len(full[-1]) == 2
    s.set_epoch(2, start_batch=4)
    assert list(s) == full[4:] and len(s) == 3
    with pytest.raises(ValueError, match=r"`start_batch` must lie in \[0, 7\]"):
        s.set_epoch(2, start_batch=8)


@pytest.mark.parametrize("world", [2, 3])
def test_batch_sampler_shards(world):
    shards = [ResumableBatchSampler(20, 2, seed=0, rank=r, world_size=world, drop_last=False)
              for r in range(world)]
    idx = [np.concatenate(list(s)) for s in shards]
    assert len({len(i) for i in idx}) == 1  # equal work per rank
    allidx = np.concatenate(idx)
    assert set(allidx.tolist()) == set(range(20))
    assert len(allidx) == -(-20 // world) * world  # padded by wrapping around


def test_eval_sampler_covers_each_sample_once():
    shards = [list(ShardedEvalSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(ShardedEvalSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]


def test_sampler_errors():
    with pytest.raises(ValueError, match="no full batch"):
        ResumableBatchSampler(5, 8)
    with pytest.raises(ValueError, match="`rank` must lie in"):
        ResumableBatchSampler(5, 1, rank=2, world_size=2)


def test_single_process_without_torchrun(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    assert info.device.type == "cpu"

import torch

from pointctx.ops import batch_to_ptr, infer_batch_size, local_index, ptr_to_batch, set_sizes

BATCH = torch.tensor([0, 0, 0, 2, 3, 3, 5])  # sets 1 and 4 empty


def test_set_sizes_with_empty_and_trailing_sets():
    assert set_sizes(BATCH).tolist() == [3, 0, 1, 2, 0, 1]
    assert set_sizes(BATCH, 8).tolist() == [3, 0, 1, 2, 0, 1, 0, 0]
    assert set_sizes(torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert set_sizes(torch.zeros(0, dtype=torch.long), 2).tolist() == [0, 0]


def test_batch_to_ptr_and_back():
    ptr = batch_to_ptr(BATCH)
    assert ptr.tolist() == [0, 3, 3, 4, 6, 6, 7]
    assert ptr.dtype == torch.long
    assert torch.equal(ptr_to_batch(ptr), BATCH)
    assert torch.equal(ptr_to_batch(ptr, num_points=7), BATCH)
    assert batch_to_ptr(BATCH, 7).tolist() == [0, 3, 3, 4, 6, 6, 7, 7]
    assert batch_to_ptr(torch.zeros(0, dtype=torch.long)).tolist() == [0]


def test_infer_batch_size():
    assert infer_batch_size(BATCH) == 6
    assert infer_batch_size(BATCH, 10) == 10
    assert infer_batch_size(torch.zeros(0, dtype=torch.long)) == 0


def test_local_index():
    assert local_index(BATCH, batch_to_ptr(BATCH)).tolist() == [0, 1, 2, 0, 0, 1, 0]


def test_round_trip_random():
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(0, 5, (20,), generator=g)
    batch = torch.repeat_interleave(torch.arange(20), sizes)
    ptr = batch_to_ptr(batch, 20)
    assert torch.equal(ptr[1:] - ptr[:-1], sizes)
    assert torch.equal(ptr_to_batch(ptr), batch)
    assert torch.equal(set_sizes(batch, 20), sizes)

"""The single-process side of the quantizer collectives: draws and subsets."""

import torch

from vqlab.quantizers.collective import draw_rows, random_subset


def test_draw_rows_without_replacement_gives_distinct_rows_and_at_most_the_batch():
    torch.manual_seed(0)
    z = torch.arange(20.0).reshape(10, 2)  # row i is (2i, 2i + 1): distinct rows
    rows = draw_rows(z, 6, replace=False)
    assert rows.shape == (6, 2)
    assert torch.unique(rows, dim=0).shape[0] == 6
    assert all(any(torch.equal(r, zr) for zr in z) for r in rows)  # each is a row of z
    every = draw_rows(z, 25, replace=False)  # more than the batch: each row once
    assert every.shape == (10, 2)
    assert torch.equal(torch.sort(every[:, 0]).values, z[:, 0])


def test_draw_rows_with_replacement_keeps_the_requested_count():
    torch.manual_seed(0)
    z = torch.arange(6.0).reshape(3, 2)
    rows = draw_rows(z, 50)
    assert rows.shape == (50, 2)
    assert torch.unique(rows, dim=0).shape[0] <= 3  # 50 draws from 3 rows repeat


def test_random_subset_is_a_uniform_subset_without_repeats():
    torch.manual_seed(0)
    index = torch.tensor([3, 8, 11, 20, 21])
    assert torch.equal(random_subset(index, 9), index)  # nothing to choose
    seen = torch.zeros(25)
    for _ in range(400):
        pick = random_subset(index, 2)
        assert pick.shape == (2,) and pick[0] != pick[1]
        assert set(pick.tolist()) <= set(index.tolist())
        seen[pick] += 1
    # each of the 5 entries is chosen with probability 2/5: 160 of 400 expected
    assert ((seen[index] - 160).abs() < 40).all()
    assert seen.sum() == 800

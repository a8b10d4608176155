"""BatchSampler: seeded epochs that cover the data, and a state that a checkpoint can restore."""

import torch

from vqlab.training.feed import BatchSampler


def test_each_epoch_is_a_permutation_without_a_ragged_batch():
    s = BatchSampler(10, 4, seed=0)
    epoch = torch.cat([s.next(), s.next()])  # 8 of 10; the last 2 would make a short batch
    assert len(set(epoch.tolist())) == 8
    third = s.next()  # a new permutation starts instead
    assert s.position == 4 and third.shape == (4,)
    assert BatchSampler(3, 8, seed=0).next().sort().values.tolist() == [0, 1, 2]  # batch > n


def test_same_seed_same_batches_and_restored_state_continues_alike():
    a, b = BatchSampler(50, 8, seed=3), BatchSampler(50, 8, seed=3)
    assert all(torch.equal(a.next(), b.next()) for _ in range(9))
    assert not torch.equal(BatchSampler(50, 8, seed=4).next(), BatchSampler(50, 8, seed=3).next())
    # what a checkpoint saves: the generator state, the permutation and the position
    saved = (a.gen.get_state(), a.perm.clone(), a.position)
    expected = [a.next() for _ in range(12)]  # crosses two epoch boundaries
    c = BatchSampler(50, 8, seed=99)
    c.gen.set_state(saved[0])
    c.perm, c.position = saved[1], saved[2]
    assert all(torch.equal(c.next(), e) for e in expected)

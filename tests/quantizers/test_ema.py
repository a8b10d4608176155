import torch

from vqlab.quantizers.ema import batch_statistics, ema_update, laplace_smooth


def test_batch_statistics_equals_one_hot_formula():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    idx = torch.tensor([2, 0, 2, 2])
    counts, sums = batch_statistics(z, idx, 4)
    one_hot = torch.nn.functional.one_hot(idx, 4).float()  # (N, K) reference
    assert torch.equal(counts, one_hot.sum(0))
    assert torch.equal(sums, one_hot.T @ z)
    assert counts.tolist() == [1, 0, 3, 0]
    assert sums[2].tolist() == [13.0, 16.0]


def test_ema_update_by_hand():
    # K=2, D=1. Start: counts (1, 1), sums (0, 10). Batch: code 0 gets 3 points summing to 6.
    # decay 0.75, not 0.5: swapping decay and 1 - decay must change the answer (and 0.75, 0.25
    # are exact in binary, so the expected values are exact too)
    state = ema_update(
        torch.tensor([1.0, 1.0]),
        torch.tensor([[0.0], [10.0]]),
        torch.tensor([3.0, 0.0]),
        torch.tensor([[6.0], [0.0]]),
        decay=0.75,
        eps=0.0,
    )
    assert state.counts.tolist() == [1.5, 0.75]  # 0.75*1 + 0.25*3, 0.75*1 + 0.25*0
    assert state.sums.flatten().tolist() == [1.5, 7.5]  # 0.75*0 + 0.25*6, 0.75*10 + 0.25*0
    # codebook = sums / counts: 1.5 / 1.5, and 7.5 / 0.75 (the unused code keeps its place)
    assert state.codebook.flatten().tolist() == [1.0, 10.0]


def test_laplace_smoothing_keeps_total_and_avoids_zero():
    counts = torch.tensor([4.0, 0.0, 0.0, 6.0])
    smooth = laplace_smooth(counts, 1e-5)
    assert torch.isclose(smooth.sum(), counts.sum())
    assert (smooth > 0).all()
    # by hand: (c + eps) / (n + K eps) * n
    assert torch.isclose(smooth[1], torch.tensor(1e-5 / (10 + 4e-5) * 10))

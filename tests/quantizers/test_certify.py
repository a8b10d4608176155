"""The fast search's certificate (plain torch): hand examples, and soundness on random rows."""

import torch

from vqlab.quantizers.ops.certify import certify_nearest as _certify


def test_certify_hand_example():
    # x = mu = 0 and every code of norm 1 (||c~||^2 = 1, so |c~|_max = 1): the score of a code
    # is its squared distance. bf16's u = 2^-8 makes E ~ 1.01 * 2^-8 / (1 - 2^-8) = 0.00396
    x, mu = torch.zeros(4, 8), torch.zeros(8)
    c_sq = torch.tensor([1.0, 1.0, float("inf")])  # the last: interleave padding, ignored
    best = torch.ones(4)  # the re-scored winner is at squared distance 1
    # nothing skipped; skipped codes at 4; at 1.02 (distance 1.00995 - E = 1.006 > 1); at
    # 1.005 (1.0025 - E = 0.9985 < 1: within rounding of the winner, so unproved)
    discarded = torch.tensor([float("inf"), 4.0, 1.02, 1.005])
    ok = _certify(x, mu, c_sq, discarded, best, torch.bfloat16)
    assert ok.tolist() == [True, True, True, False]
    # fp16's u = 2^-11 is 8x finer: 1.005 is then far enough
    assert _certify(x, mu, c_sq, discarded, best, torch.float16).tolist() == [True] * 4


def test_certify_refuses_a_skipped_code_nearer_than_the_winner():
    # a skipped score below the winner's (discarded < best) can never be certified, whatever
    # the rounding bounds: the row must go to the exact search
    x, mu = torch.zeros(3, 4), torch.zeros(4)
    c_sq = torch.ones(5)
    best = torch.full((3,), 2.0)
    discarded = torch.tensor([0.5, 1.9, 2.0])  # all as near as the winner or nearer
    assert _certify(x, mu, c_sq, discarded, best, torch.bfloat16).tolist() == [False] * 3

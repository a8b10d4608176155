import pytest

from vqlab.training.schedule import Schedule


def test_standard_quantizes_from_step_zero_and_inits_once():
    s = Schedule("standard", steps=10, pretrain_steps=4)
    assert [s.quantize_at(t) for t in range(10)] == [True] * 10
    assert [t for t in range(10) if s.init_at(t)] == [0]
    assert s.phase(0) == "vq"


def test_deferred_pretrains_then_inits_then_quantizes():
    s = Schedule("deferred", steps=10, pretrain_steps=4)
    assert [s.quantize_at(t) for t in range(10)] == [False] * 4 + [True] * 6
    assert [t for t in range(10) if s.init_at(t)] == [4]
    assert [s.phase(t) for t in (0, 3, 4, 9)] == ["pretrain", "pretrain", "vq", "vq"]


def test_equal_budget_and_bad_schedules():
    assert Schedule("deferred", 10, 4).steps == Schedule("standard", 10, 4).steps
    with pytest.raises(ValueError, match="pretrain_steps < steps"):
        Schedule("deferred", 10, 10)
    with pytest.raises(ValueError, match="choose one of"):
        Schedule("late", 10, 4)

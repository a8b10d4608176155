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


def test_bridge_blend_by_hand():
    s = Schedule("deferred", steps=10, pretrain_steps=4, bridge_steps=4)
    # quantized steps 4..9: a = 1/4, 2/4, 3/4, then 1
    assert [s.blend(t) for t in range(4, 10)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert Schedule("deferred", 10, 4).blend(4) == 1.0  # no bridge: full VQ at once
    assert Schedule("standard", 10, 4, bridge_steps=2).blend(0) == 0.5  # standard starts at 0


def test_refits_repeat_the_init_inside_the_vq_phase_only():
    s = Schedule("deferred", steps=10, pretrain_steps=4, refit_at=(6, 8))
    assert [t for t in range(10) if s.init_at(t)] == [4, 6, 8]
    for bad in ((4,), (3,), (10,)):
        with pytest.raises(ValueError, match="outside the VQ phase"):
            Schedule("deferred", 10, 4, refit_at=bad)
    with pytest.raises(ValueError, match="bridge_steps"):
        Schedule("deferred", 10, 4, bridge_steps=-1)

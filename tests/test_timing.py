import time

import pytest

from helpers.timing import UNSTEADY, Timing, time_it


def test_time_it_counts_warmup_and_repeats():
    calls = []
    result = time_it(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(result.times) == 3 and result.value == 5


def test_time_it_measures_real_time():
    result = time_it(lambda: time.sleep(0.02), repeats=3, warmup=0)
    assert 0.015 < result.min <= result.median <= result.max < 0.5
    assert "median of 3" in str(result)


def test_single_run_prints_cleanly():
    assert str(time_it(lambda: None, repeats=1, warmup=0, label="x")).endswith("s (1 run)")


def test_repeats_that_disagree_are_called_unsteady():
    """A busy machine (two threads fighting another job for two cores) gave 70 s and 126 s for one call."""
    assert str(Timing([69.986, 126.374], label="float32")).endswith(UNSTEADY)
    assert not str(Timing([1.0, 1.4])).endswith(UNSTEADY) and Timing([1.0, 1.4]).steady
    assert Timing([1.0]).steady and not Timing([1.0, 1.6]).steady


@pytest.mark.parametrize(("repeats", "warmup"), [(0, 1), (-1, 0), (1, -1)])
def test_time_it_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_it(lambda: None, repeats=repeats, warmup=warmup)


def test_progress_bar_is_off_while_timing_and_restored(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=False, leave=False)
    seen = []
    time_it(lambda: seen.append(dict(tiny_pipe._progress_bar_config)), repeats=1, warmup=0, pipe=tiny_pipe)
    assert seen[0]["disable"] is True
    assert tiny_pipe._progress_bar_config == {"disable": False, "leave": False}
    tiny_pipe.set_progress_bar_config(disable=True)


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_time_it_synchronises_the_device(kind, simulate_device, monkeypatch):
    """Before and after each timed call, whatever torch.utils.benchmark's timer does in this torch version."""
    import torch

    simulate_device(kind)
    syncs = []
    if kind == "cuda":
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(kind))
    else:
        monkeypatch.setattr(torch.mps, "synchronize", lambda: syncs.append(kind))
    time_it(lambda: None, repeats=3, warmup=1)
    assert syncs == [kind] * 6


def test_an_estimate_from_two_step_counts_splits_fixed_and_per_step_costs():
    from helpers.timing import time_from_steps

    calls = []

    def generate(steps):  # 0.01 s fixed + 0.005 s per step
        calls.append(steps)
        time.sleep(0.01 + 0.005 * steps)
        return f"picture after {steps}"

    estimate = time_from_steps(generate, steps=50, few=(2, 6), label="slow")
    assert calls == [2, 2, 6] and estimate.value == "picture after 6"  # the first one untimed, a warm-up
    assert 0.2 < estimate.median < 0.45  # 0.01 + 50 x 0.005 = 0.26 s
    assert str(estimate).startswith("slow: ") and "estimated for 50 steps from runs of 2 and 6" in str(estimate)
    calls.clear()
    time_from_steps(generate, steps=50, few=(2, 6), warmup=False)
    assert calls == [2, 6]  # no untimed call
    with pytest.raises(ValueError, match="two different step counts"):
        time_from_steps(generate, 50, few=(3, 3))

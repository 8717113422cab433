"""The expected duration of a run, from its first steps, and the one warning for a long CPU run."""

from __future__ import annotations

import logging

import pytest

from lowshot.train import eta


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("device, warns", [("cpu", True), ("cuda", False)])
def test_the_estimate_comes_after_the_warm_up_and_a_long_cpu_run_warns_once(device, warns, monkeypatch, caplog):
    clock_time = FakeTime()
    monkeypatch.setattr(eta.time, "perf_counter", clock_time)
    clock = eta.RunClock(10_000, unit="step", device=device, warn_hours=1.0, warmup=2, measure=5, min_seconds=5)
    with caplog.at_level(logging.INFO):
        for step in range(1, 20):
            clock_time.now += 30.0 if step <= 2 else 2.0  # slow first steps (warm-up), then 2 s a step
            clock.tick(step)
    # Timing starts at step 2 (t = 160): 60 s of warm-up before, then 2 s for each of the 9,998 steps left.
    assert clock.expected_seconds == pytest.approx(60 + 2 * 9_998)
    assert caplog.text.count("expected duration of this run: 5 h 34 min") == 1
    assert caplog.text.count("more than warn_hours = 1") == (1 if warns else 0)
    if warns:
        assert "Training on a CPU" in caplog.text


def test_durations_read_well():
    assert [eta.format_duration(s) for s in (5, 250, 7980, 3 * 86400 + 4 * 3600)] == \
        ["5 s", "4 min 10 s", "2 h 13 min", "3 d 4 h"]

"""The expected duration of a training run, from its first steps.

A CPU run can take days without the user noticing until the next morning. `RunClock` times the steps
after a short warm-up (the first steps pick kernels and allocate), logs the run's expected duration
once, and on a CPU warns once when it exceeds `warn_hours`, pointing at the README's CPU recipe. The
progress bar keeps showing tqdm's own running estimate.
"""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger(__name__)

CPU_RECIPE_HINT = "see 'Training on a CPU' in the README for settings that fit a CPU"


def format_duration(seconds: float) -> str:
    """'3 d 4 h', '2 h 13 min', '4 min 10 s', '12 s'."""
    s = max(0, round(seconds))
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s % 60:02d} s"
    return f"{s} s"


class RunClock:
    """Call `tick(done)` after every step with the units done so far in this call (steps, images).

    After `warmup` ticks it starts timing; once `measure` more ticks and at least `min_seconds` have
    passed, it logs the expected duration of the `remaining` units this call has to train, and warns
    (once) when that exceeds `warn_hours` on a CPU. `expected_seconds` holds the estimate.
    """

    def __init__(self, remaining: float, *, unit: str, device: torch.device | str, warn_hours: float | None,
                 warmup: int = 2, measure: int = 5, min_seconds: float = 5.0) -> None:
        self.remaining, self.unit, self.device = remaining, unit, torch.device(device)
        self.warn_hours, self.warmup, self.measure, self.min_seconds = warn_hours, warmup, measure, min_seconds
        self.start = time.perf_counter()
        self.ticks = 0
        self.mark: tuple[float, float] | None = None  # (time, units done) when timing started
        self.expected_seconds: float | None = None

    def tick(self, done: float) -> None:
        self.ticks += 1
        if self.expected_seconds is not None or self.remaining <= 0:
            return
        now = time.perf_counter()
        if self.mark is None:
            if self.ticks >= self.warmup:
                self.mark = (now, done)
            return
        seconds, units = now - self.mark[0], done - self.mark[1]
        if self.ticks - self.warmup < self.measure or seconds < self.min_seconds or units <= 0:
            return
        rate = seconds / units
        self.expected_seconds = (self.mark[0] - self.start) + rate * (self.remaining - self.mark[1])
        log.info("expected duration of this run: %s (%.3g s per %s over the last %g %ss, %g %ss in all)",
                 format_duration(self.expected_seconds), rate, self.unit, units, self.unit, self.remaining, self.unit)
        if self.device.type == "cpu" and self.warn_hours is not None and self.expected_seconds > self.warn_hours * 3600:
            log.warning("this run is expected to take %s on the CPU, more than warn_hours = %g; %s",
                        format_duration(self.expected_seconds), self.warn_hours, CPU_RECIPE_HINT)

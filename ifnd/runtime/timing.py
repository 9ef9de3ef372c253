"""Step timings for benchmarks on a machine that may be shared."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable, TypeVar

Name = TypeVar("Name", bound=Hashable)


def interleaved_median_times(runners: dict[Name, Callable[[], None]], steps: int, warmup: int) -> dict[Name, float]:
    """Median seconds per call of each runner.

    The runners alternate call by call, in an order that is reversed every round, so that a
    busy neighbour, a cache left warm by the previous call or a drifting clock speed hits every
    runner alike; ``warmup`` untimed rounds come first.
    """
    names = list(runners)
    times: dict[Name, list[float]] = {name: [] for name in names}
    for index in range(warmup + steps):
        for name in (names if index % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            runners[name]()
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}

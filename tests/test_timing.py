"""Interleaved benchmark timings."""

from ifnd.runtime.timing import interleaved_median_times


def test_runners_alternate_in_an_order_reversed_every_round_after_the_warmup():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    medians = interleaved_median_times(runners, steps=2, warmup=1)
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert set(medians) == {"a", "b", "c"} and all(value >= 0 for value in medians.values())

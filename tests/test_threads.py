"""cpu_threads: explicit, automatic, and the warning for torchrun's OMP_NUM_THREADS=1."""

import pytest

from ifnd.runtime.threads import threads_for


def test_explicit_threads_win():
    assert threads_for(3, {"OMP_NUM_THREADS": "1", "WORLD_SIZE": "2"}, 16) == (3, None)


def test_automatic_threads_share_the_cores_between_local_processes():
    assert threads_for(0, {"LOCAL_WORLD_SIZE": "4"}, 16) == (4, None)
    assert threads_for(0, {}, 16) == (16, None)
    assert threads_for(0, {"OMP_NUM_THREADS": "6"}, 16) == (6, None)


def test_torchrun_single_thread_is_kept_with_a_warning():
    threads, warning = threads_for(0, {"OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, 16)
    assert threads == 1 and "cpu_threads=8" in warning


def test_negative_threads_are_rejected():
    with pytest.raises(ValueError, match="cpu_threads"):
        threads_for(-1, {}, 4)

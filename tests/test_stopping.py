"""SIGTERM / SIGUSR1 are recorded (not fatal) while training, and the old handlers come back."""

import os
import signal

from ifnd.runtime.stopping import StopSignals


def test_signals_are_recorded_inside_and_restored_outside():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.received == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test run without the handler
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before

"""Graceful stop on SIGTERM / SIGUSR1 (cluster preemption, time limits, ``torchrun`` shutdown).

Schedulers send SIGTERM (SLURM also SIGUSR1 with ``--signal``) some time before they kill
a job, and ``torchrun`` forwards SIGTERM to its workers. Dying there would lose everything
since the last checkpoint; instead :class:`StopSignals` only records the signal, and the
training loop stops at the end of the current step, all ranks at the same step
(:func:`~ifnd.runtime.distributed.any_true`), after writing a checkpoint.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """Context manager: while inside, SIGTERM / SIGUSR1 set :attr:`received` instead of killing.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._record) for sig in self.signals}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader we build: a loader worker ignores SIGTERM / SIGUSR1.

    A scheduler's SIGTERM (SLURM at the time limit, ``kill`` of a process group, a container stop) reaches
    every process of the job, loader workers included. A worker killed by it makes the main process raise
    "DataLoader worker ... is killed by signal" at its next batch, before it can stop at the end of the step
    and write its checkpoint. Ignoring the signals, a worker lives until the main process has stopped
    gracefully and shuts it down (a worker also exits on its own once its parent is gone). torch installs its
    own SIGTERM handler in a worker just before this runs, so a signal in the first milliseconds of a worker's
    life still ends it.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

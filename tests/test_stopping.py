"""SIGTERM / SIGUSR1 are recorded (not fatal) while training, and the old handlers come back."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from ifnd.runtime.stopping import StopSignals, ignore_stop_signals

ROOT = Path(__file__).resolve().parents[1]


def test_signals_are_recorded_inside_and_restored_outside():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.received == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test run without the handler
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_loader_workers_ignore_the_stop_signals_and_restore_nothing_in_the_parent():
    before = signal.getsignal(signal.SIGTERM)
    loader = DataLoader(list(range(4)), batch_size=2, num_workers=1, worker_init_fn=ignore_stop_signals)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
    assert signal.getsignal(signal.SIGTERM) is before  # only the worker ignores them


def _a_worker_ignores_sigterm(pid: int) -> bool:
    """Whether a child of ``pid`` (a loader worker) has set SIGTERM to ignored (Linux ``/proc``).

    torch's worker installs its own SIGTERM handler (exit if the parent sent it, else die) just before our
    ``worker_init_fn`` runs; the test signals once the worker is past that window."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except FileNotFoundError:
            continue
        ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        if ignored >> (signal.SIGTERM - 1) & 1:
            return True
    return False


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_stops_gracefully_with_loader_workers(tmp_path):
    """SLURM at the time limit, or ``kill -- -PGID``, signals the loader workers too: the run must still
    stop at the end of a step with its checkpoint, not die of "DataLoader worker ... killed by signal"."""
    out = tmp_path / "run"
    sets = ["device=cpu", "data.name=digits", "data.image_size=16", "data.num_workers=1", "model.backbone=small_cnn",
            "model.proj_hidden_dim=32", "model.proj_dim=16", "train.batch_size=32", "train.epochs=50", "knn.every=0",
            "detection.mode=none", f"output_dir={out}"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        run = subprocess.Popen([sys.executable, "-m", "ifnd", "pretrain", *(f"--set={s}" for s in sets)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 120
        while run.poll() is None and time.monotonic() < deadline and not (
                (out / "checkpoints" / "last.pt").exists() and _a_worker_ignores_sigterm(run.pid)):
            time.sleep(0.05)
        assert run.poll() is None, log.read_text()[-3000:]
        os.killpg(run.pid, signal.SIGTERM)  # the main process and its loader worker
        run.wait(timeout=120)
    text = log.read_text()
    assert run.returncode == 130 and "interrupted at epoch" in text and "checkpoint saved" in text, text[-3000:]
    assert "killed by signal" not in text

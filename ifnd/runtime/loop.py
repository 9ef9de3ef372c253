"""The training loop every command shares: :class:`Engine` runs a :class:`Task`.

Read top to bottom: :class:`Engine` joins the process group, picks the device, seeds, finds
the checkpoint to resume from and refuses an incompatible one, lets the task build itself,
then :meth:`Engine.fit` loops over epochs::

    record = task.start_epoch(epoch, step)      # e.g. a clustering round, FNE's epoch start
    for batch in task.loader(sampler, epoch):   # resumable: a resumed epoch skips done steps
        loss = task.step(batch, epoch, step)     # forward and loss only
        (NaN/inf guard on the global loss, backward, clip, optimizer and LR step)
        task.after_step()                        # e.g. fill the detector's bank
        (checkpoint every N steps)
    record |= task.end_epoch(epoch + 1)          # statistics of the epoch (detection precision, ...)
    (checkpoint last.pt: the epoch is safe before anything evaluates it)
    record |= task.evaluate(epoch + 1)           # kNN monitor, validation, test
    (checkpoint last.pt again, best.pt on a better record[task.best_key], metrics.json, TensorBoard)

A checkpoint is written atomically at every epoch end, every ``checkpoint_every_steps``, on
Ctrl-C and on SIGTERM / SIGUSR1 (every rank stops at the same step); the one it replaces is
kept as ``previous.pt``, which ``--resume auto`` falls back to when ``last.pt`` is unreadable.
Resuming gives the weights of a run that never stopped, because every random stream comes
from :func:`~ifnd.runtime.seeding.derive_seed` and the global generators are in the
checkpoint; a resumed epoch's loss and time cover the steps before the stop too (their
partial sums are in the checkpoint). An error in ``evaluate`` stops the run with the
epoch's checkpoint saved; ``--resume auto`` runs that evaluation again first.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Protocol

import torch
from tqdm import tqdm

from ifnd.config import Config
from ifnd.runtime import distributed as dist
from ifnd.runtime.threads import set_cpu_threads
from ifnd.runtime.checkpoint import (
    CheckpointError,
    check_compatible,
    load_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ifnd.runtime.run import RunDir, claim_run_dir
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.seeding import seed_everything
from ifnd.runtime.stopping import StopSignals

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class EvaluationFailed(RuntimeError):
    """An end-of-epoch evaluation raised; the epoch's checkpoint is saved and resuming evaluates it again."""


class Interrupted(Exception):
    """Raised inside an epoch to stop after a checkpoint (SIGTERM/SIGUSR1, or tests simulating a kill)."""


@dataclass(frozen=True)
class LoopSettings:
    """How long and how a task trains (from ``train.*``, ``linear.*`` or ``semisup.*``)."""

    epochs: int
    batch_size: int
    checkpoint_every_steps: int = 0
    log_every_steps: int = 10
    grad_clip: float = 0.0
    drop_last: bool = True
    batch_key: str = "train.batch_size"

    @classmethod
    def from_train(cls, train: Config) -> "LoopSettings":
        """The shared ``train.*`` keys."""
        return cls(train.epochs, train.batch_size, train.checkpoint_every_steps, train.log_every_steps,
                   train.grad_clip)


@dataclass(frozen=True)
class Context:
    """Where a task runs: its config, process group position and device."""

    cfg: Config
    rank: int
    world: int
    device: torch.device


class Task(Protocol):
    """What a training command supplies; everything else is the engine's.

    A task class is built as ``TaskClass(ctx, saved)`` with ``saved`` the checkpoint being
    resumed (or None): a task whose construction depends on it (a vocabulary, an
    architecture) reads it there; the rest of its state comes back through
    :meth:`load_state_dict`.
    """

    # Config keys a resumed run may change beyond the engine's (checkpoint.RESUME_MAY_CHANGE),
    # e.g. train.epochs when the schedule does not depend on it; every other key must match.
    resume_may_change: ClassVar[tuple[str, ...]]
    settings: LoopSettings
    model: torch.nn.Module                  # saved as "model"; train() is called before each epoch
    optimizer: torch.optim.Optimizer
    num_samples: int                        # training samples per epoch (the sampler's N)
    best_key: str | None                    # epoch-record key whose maximum selects best.pt (None: no best.pt)

    def lr_multiplier(self, step: int, steps_per_epoch: int) -> float: ...
    def loader(self, sampler: ResumableSampler, epoch: int) -> Iterable[Any]: ...
    def start_epoch(self, epoch: int, step: int) -> dict[str, Any]: ...
    def step(self, batch: Any, epoch: int, step: int) -> torch.Tensor: ...
    def after_step(self) -> None: ...
    def end_epoch(self, epochs_done: int) -> dict[str, Any]: ...   # the epoch's statistics; runs before its checkpoint
    def evaluate(self, epochs_done: int) -> dict[str, Any]: ...    # monitor, validation, test; runs after it
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]: ...


ENGINE_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "global_step", "history", "train_time",
               "best", "rng", "config", "num_samples", "evaluated", "epoch_progress")


class Engine:
    """One run of ``task_class`` as configured; :meth:`fit` trains the remaining epochs.

    Args:
        cfg: the resolved config (``seed``, ``device``, ``output_dir`` and the task's keys).
        task_class: builds the task as ``task_class(ctx, saved_checkpoint_or_None)``.
        resume: ``"auto"`` (the run directory's last checkpoint, if any), a checkpoint path, or None
            (a new run: refused when ``output_dir`` holds one, see :func:`~ifnd.runtime.run.claim_run_dir`).
        stop_at: ``(epoch, step)`` where to simulate a kill (tests).
        resume_may_change: the task's keys a resumed run may change; default ``task_class.resume_may_change``.
        run: the run directory when the caller made (and claimed) it already (evaluations); default ``RunDir(cfg)``.
        overwrite: start a new run into an ``output_dir`` that holds one, deleting it.
    """

    def __init__(self, cfg: Config, task_class: Callable[..., Task], resume: str | None = None,
                 stop_at: tuple[int, int] | None = None, resume_may_change: tuple[str, ...] | None = None,
                 run: RunDir | None = None, overwrite: bool = False):
        self.cfg = cfg
        self.stop_at = stop_at
        self.stop_signals = StopSignals()
        rank, world, local_rank = dist.init(cfg.dist.timeout_minutes)
        set_cpu_threads(cfg.cpu_threads)
        if run is None:
            claim_run_dir(cfg.output_dir, resume, overwrite)
        self.ctx = Context(cfg, rank, world, dist.pick_device(cfg.device, local_rank))
        seed_everything(cfg.seed)
        checkpoint, saved = load_resume(resume, cfg.output_dir)
        if saved is not None:
            may_change = resume_may_change if resume_may_change is not None else task_class.resume_may_change
            check_compatible(saved.get("config", {}), cfg, may_change)
        self.task = task_class(self.ctx, saved)
        task = self.task
        if saved is not None and saved.get("num_samples", task.num_samples) != task.num_samples:
            raise CheckpointError(f"the checkpoint {str(checkpoint)!r} was trained on {saved['num_samples']} samples "
                                  f"but the data now hold {task.num_samples}; resume on the same data or start a new "
                                  f"run with --set output_dir=DIR")
        self.settings = task.settings
        self.sampler = ResumableSampler(task.num_samples, self.settings.batch_size, cfg.seed, world, rank,
                                        self.settings.drop_last, self.settings.batch_key)
        steps = self.sampler.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(task.optimizer, lambda s: task.lr_multiplier(s, steps))
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.best = -math.inf
        self.evaluated = True  # False between an epoch's checkpoint and the end of its evaluation
        # the current epoch's loss sum, steps and seconds before this process (or segment) started it
        self.epoch_progress = {"loss_sum": 0.0, "steps": 0, "time_s": 0.0}
        self._segment_start: float | None = None  # perf_counter() when this process resumed the epoch
        if saved is not None:
            self._restore(saved)
            if dist.is_main():
                log.info("resumed from %s at epoch %d step %d", checkpoint, self.epoch, self.step)
        self.owns_run = run is None
        self.run = run if run is not None else RunDir(cfg)

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        extra = self.task.state_dict()
        clash = set(extra) & set(ENGINE_KEYS)
        assert not clash, f"task state keys {clash} are the engine's"
        return {
            "model": self.task.model.state_dict(),
            "optimizer": self.task.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "history": self.history,
            "train_time": self.train_time,
            "best": self.best,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "num_samples": self.task.num_samples,
            "evaluated": self.evaluated,
            "epoch_progress": {**self.epoch_progress, "time_s": self._epoch_time()},
            **extra,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.task.model.load_state_dict(state["model"])
        self.task.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.task.load_state_dict(state)
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.history, self.train_time, self.best = state["history"], state["train_time"], state["best"]
        self.evaluated = state.get("evaluated", True)
        self.epoch_progress = dict(state.get("epoch_progress", self.epoch_progress))
        set_rng_state(state["rng"])

    def save(self, name: str = "last.pt") -> None:
        """Write ``checkpoints/name`` atomically (rank 0; ``last.pt`` keeps the one it replaces); every rank waits."""
        if dist.is_main():
            save_checkpoint(self._state(), self.run.checkpoints / name, keep_previous=name == "last.pt")
        dist.barrier()

    def _epoch_time(self) -> float:
        """Seconds spent in the current epoch so far, before a resume included."""
        running = 0.0 if self._segment_start is None else time.perf_counter() - self._segment_start
        return self.epoch_progress["time_s"] + running

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns what ``metrics.json`` holds."""
        try:
            with self.stop_signals:
                self._loop()
        except (KeyboardInterrupt, Interrupted):
            self.save()
            if dist.is_main():
                log.warning("interrupted at epoch %d step %d; checkpoint saved, resume with --resume auto",
                            self.epoch, self.step)
            raise
        finally:
            if self.owns_run:
                self.run.close()
        return self.write_metrics()

    def _loop(self) -> None:
        if not self.evaluated:  # resumed from an epoch's checkpoint written before its evaluation ended
            self._evaluate(self.history[-1])
        while self.epoch < self.settings.epochs:
            record: dict[str, Any] = {"epoch": self.epoch, **self.task.start_epoch(self.epoch, self.step)}
            record.update(self.train_one_epoch())
            self.epoch, self.step = self.epoch + 1, 0
            record.update(self.task.end_epoch(self.epoch))
            self.history.append(record)
            self.evaluated = False
            self.save()  # the epoch is safe before anything evaluates it
            self._evaluate(record)

    def _evaluate(self, record: dict[str, Any]) -> None:
        """The task's evaluation of the epoch just done, into ``record``; then last.pt, best.pt and metrics."""
        try:
            record.update(self.task.evaluate(self.epoch))
        except Exception as err:
            log.exception("evaluation after epoch %d failed", self.epoch)
            raise EvaluationFailed(
                f"evaluation after epoch {self.epoch} failed ({type(err).__name__}: {err}); the epoch's checkpoint "
                f"{self.run.checkpoints / 'last.pt'} is saved: fix the cause, then --resume auto evaluates it again"
            ) from err
        self.evaluated = True
        self.run.scalars.add(record, self.epoch, "epoch")
        self.save()
        key = self.task.best_key
        if key is not None and record.get(key, -math.inf) > self.best:
            self.best = record[key]
            self.save("best.pt")
        self.write_metrics()

    def train_one_epoch(self) -> dict[str, float]:
        """The remaining steps of the current epoch; returns its loss, LR, time and throughput."""
        settings, task = self.settings, self.task
        self.sampler.set_epoch(self.epoch, self.step)
        samples = len(self.sampler) * self.ctx.world
        progress = self.epoch_progress
        task.model.train()
        start = self._segment_start = time.perf_counter()
        bar = tqdm(task.loader(self.sampler, self.epoch), desc=f"epoch {self.epoch}", initial=self.step,
                   total=self.sampler.steps_per_epoch, disable=not dist.is_main(), leave=False)
        for batch in bar:
            if dist.any_true(self.stop_at == (self.epoch, self.step) or self.stop_signals.received is not None):
                raise Interrupted  # on every rank at the same step
            loss = task.step(batch, self.epoch, self.step)
            loss_value = dist.mean(loss).item()  # the global batch's loss: every rank decides alike
            if not math.isfinite(loss_value):
                raise TrainingDiverged(self._divergence(loss_value, batch))
            task.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), settings.grad_clip)
            task.optimizer.step()
            self.scheduler.step()
            task.after_step()
            progress["loss_sum"] += loss_value
            progress["steps"] += 1
            self.step += 1
            self.global_step += 1
            if self.global_step % settings.log_every_steps == 0:
                self.run.scalars.add({"loss": loss_value, "lr": self.scheduler.get_last_lr()[0]}, self.global_step, "step")
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if settings.checkpoint_every_steps and self.step % settings.checkpoint_every_steps == 0:
                self.save()
        elapsed = time.perf_counter() - start
        epoch_time = self._epoch_time()
        self.train_time += epoch_time
        record = {"loss": progress["loss_sum"] / max(1, progress["steps"]), "lr": self.scheduler.get_last_lr()[0],
                  "samples_per_s": samples / max(elapsed, 1e-9), "epoch_time_s": epoch_time}
        self.epoch_progress, self._segment_start = {"loss_sum": 0.0, "steps": 0, "time_s": 0.0}, None
        return record

    def _divergence(self, loss_value: float, batch: Any) -> str:
        """The NaN/inf message: where, the likely cause, and the checkpoint there is to go back to."""
        last = self.run.checkpoints / "last.pt"
        if _holds_nonfinite(batch):
            cause = "the input batch holds NaN or infinite values: check the data (and its normalisation)"
        elif self.global_step == 0:
            cause = ("this is the first step: check the input data for NaN/inf values and the config "
                     "(learning rate, temperature)")
        else:
            cause = "lower the learning rate (or raise the temperature)"
        kept = (f"the last good checkpoint ({last}) is kept; {cause}, then --resume auto" if last.is_file()
                else f"no checkpoint has been written yet; {cause}, then start again")
        return f"loss is {loss_value} at epoch {self.epoch} step {self.step}; {kept}"

    # ---------------------------------------------------------------- logging
    def write_metrics(self) -> dict[str, Any]:
        """``metrics.json``: the task's summary, epochs done, training time, best value and the history."""
        metrics = {**self.task.summary(self.history), "epochs_done": self.epoch, "train_time_s": self.train_time}
        if self.task.best_key is not None:
            metrics[f"best_{self.task.best_key.replace('/', '_')}"] = self.best if math.isfinite(self.best) else None
        metrics["history"] = self.history
        self.run.write_metrics(metrics)
        return metrics


def _holds_nonfinite(batch: Any) -> bool:
    """Whether any floating-point tensor in ``batch`` (nested tuples, lists, dicts) holds NaN or inf."""
    if isinstance(batch, torch.Tensor):
        return batch.is_floating_point() and not bool(torch.isfinite(batch).all())
    if isinstance(batch, dict):
        return any(_holds_nonfinite(value) for value in batch.values())
    if isinstance(batch, (tuple, list)):
        return any(_holds_nonfinite(value) for value in batch)
    return False

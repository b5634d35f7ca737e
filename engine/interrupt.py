"""Stop requests: SIGTERM (what SLURM sends before preemption or at the time limit), SIGINT
(Ctrl-C), SIGHUP (a closed terminal or ssh session) and SIGUSR1 (``sbatch --signal``) ask training
to write a resumable checkpoint at the next optimisation step (or, in an evaluation, to drop it)
and exit with :data:`engine.cli.EXIT_REQUEUE`. A second Ctrl-C stops at once."""
import os
import signal
import sys
import threading

from . import distributed as dist
from .checkpoint import LATEST
from .cli import EXIT_REQUEUE
from .distributed import any_rank, get_rank, is_dist

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1") if hasattr(signal, name))


class StopDuringEvaluation(Exception):
    """A stop was requested while validating or testing: the evaluation is dropped, not finished."""


class StopRequest:
    """Installs the handlers while in use (``with StopRequest() as stop``); ``stop.requested()``
    is the decision every rank takes together at a step boundary. Nested uses share the outer
    one: the entry points install it for the whole run, so a signal that arrives while the data
    or the model are being set up, or during the final test, is not lost."""

    _active = None

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if StopRequest._active is not None:
            return StopRequest._active
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        StopRequest._active = self
        return self

    def __exit__(self, *exc):
        if StopRequest._active is not self:
            return False
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        StopRequest._active = None
        return False

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            if signum == getattr(signal, "SIGHUP", None):
                _leave_closed_terminal()
            # stderr, not print: every rank says so (their prints are silenced but rank 0's)
            try:
                sys.stderr.write(f"\n{self.signal} received{f' by rank {get_rank()}' if is_dist() else ''}: saving "
                                 f"a resumable checkpoint at the next step boundary"
                                 + (" (Ctrl-C again to stop without saving)" if signum == signal.SIGINT else "")
                                 + "\n")
                sys.stderr.flush()
            except OSError:
                pass

    def requested(self):
        return any_rank(self.signal is not None)


def _leave_closed_terminal():
    """After SIGHUP, output to a terminal that has gone fails: send it nowhere, so the save goes on
    (output to files or pipes, a SLURM log, stays)."""
    devnull = None
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            gone = stream.isatty()
        except (OSError, ValueError):
            gone = True
        if gone:
            devnull = devnull or open(os.devnull, "w")
            setattr(sys, name, devnull)


def current_stop():
    """The stop request the entry point installed for this run (an inert one where none is)."""
    return StopRequest._active or StopRequest()


def ignore_stop_signals():
    """For DataLoader workers: the main process decides when to stop and then shuts them down.

    A worker killed by the terminal's Ctrl-C or by SLURM's signal to every process of the job would
    make the main process fail at its next batch instead of saving.
    """
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def stop_run(stop, checkpointer, state, epoch, iteration=0, partial=None, saved=False):
    """Write the checkpoint a requested stop needs and report it; returns the exit status.

    ``epoch``/``iteration`` is where training continues; ``state(last_epoch, **extra)`` builds the
    checkpoint; ``saved``: the epoch checkpoint just written already holds this position.
    """
    if not saved and checkpointer.saving:
        extra = {"partial": partial} if partial else {}
        checkpointer.save(LATEST, state(epoch - 1, resume={"epoch": epoch, "iteration": iteration}, **extra))
    where = f"epoch {epoch}" + (f", iteration {iteration}" if iteration else "")
    why = stop.signal or "a stop request on another process"
    if not checkpointer.saving:
        print(f"stopped by {why} at {where}; nothing was saved (--no_save_ckpt)", flush=True)
    elif checkpointer.output_dir:
        path = checkpointer.path(LATEST if not saved else f"checkpoint-{epoch - 1}.pth")
        print(f"stopped by {why}; {path} holds the run up to {where}: rerun the same command to continue "
              f"(exit status {EXIT_REQUEUE})", flush=True)
    else:
        print(f"stopped by {why} at {where}; nothing was saved (no --output_dir)", flush=True)
    # No rank leaves before rank 0's checkpoint is on disk: a launcher that sees one worker end
    # stops the others, and would otherwise cut the save short.
    dist.barrier(control=True)
    dist.cleanup()
    return EXIT_REQUEUE


def stopped_evaluation(stop, what):
    """A stop during an evaluation that has nothing to save (--eval, or the final test after the
    training is complete): say so and return the exit status."""
    print(f"stopped by {stop.signal or 'a stop request on another process'} during {what}; nothing of it was "
          f"written: rerun the same command to run it (exit status {EXIT_REQUEUE})", flush=True)
    dist.cleanup()
    return EXIT_REQUEUE

"""Stop requests: SIGTERM (what SLURM sends before preemption or at the time limit), SIGINT
(Ctrl-C) and SIGUSR1 (``sbatch --signal``) ask training to write a resumable checkpoint at the next
optimisation step and exit with :data:`engine.cli.EXIT_REQUEUE`. A second Ctrl-C stops at once."""
import signal
import sys
import threading

from . import distributed as dist
from .checkpoint import LATEST
from .cli import EXIT_REQUEUE
from .distributed import any_rank, get_rank, is_dist

SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)


class StopRequest:
    """Installs the handlers while in use (``with StopRequest() as stop``); ``stop.requested()``
    is the decision every rank takes together at a step boundary."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            # stderr, not print: every rank says so (their prints are silenced but rank 0's)
            sys.stderr.write(f"\n{self.signal} received{f' by rank {get_rank()}' if is_dist() else ''}: saving "
                             f"a resumable checkpoint at the next step boundary"
                             + (" (Ctrl-C again to stop without saving)" if signum == signal.SIGINT else "") + "\n")
            sys.stderr.flush()

    def requested(self):
        return any_rank(self.signal is not None)


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
    dist.cleanup()
    return EXIT_REQUEUE

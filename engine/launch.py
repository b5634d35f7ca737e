"""torchrun for runs that are stopped and requeued: ``python -m engine.launch`` takes torchrun's
options and script (``scripts/common.sh`` starts every run through it).

torch 2.14's torchrun handles the signals its ``--signals_to_handle`` names (SIGTERM, SIGINT,
SIGHUP, SIGQUIT by default, whatever ``TORCHELASTIC_SIGNALS_TO_HANDLE`` says) by passing them to
the workers, killing those still alive after ``--shutdown_timeout`` and then failing with a
traceback (status 1); a signal it does not handle, such as SLURM's SIGUSR1, kills it and leaves
the workers running. Here the stop signals (:data:`engine.interrupt.SIGNALS`) are this process's
own: each one is passed on to every worker (each in its own session, with its DataLoader
workers), which saves a resumable checkpoint at its next step and exits with status 75; when all
workers have ended that way this launcher exits 75 too, so a job script can requeue on it.
torchrun keeps SIGQUIT: it kills the workers at once. Other failures end with the workers' own
status (2 for a user error, 1 for a failed run), after their ``error:`` lines.
"""
import logging
import os
import signal
import sys

from .cli import EXIT_REQUEUE
from .interrupt import SIGNALS, _leave_closed_terminal


def child_pids(pid=None):
    """Process ids whose parent is ``pid`` (this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
            found.append(int(entry))
    return found


class _StoppedBeforeStart(Exception):
    """A stop signal arrived before any worker was running: nothing to save."""


class Forwarder:
    """Passes each stop signal to every worker's process group, and remembers the first."""

    def __init__(self):
        self.signal = None
        self.previous = {}

    def install(self):
        for s in SIGNALS:
            self.previous[s] = signal.signal(s, self.handle)

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        self.signal = self.signal or name
        if signum == getattr(signal, "SIGHUP", None):
            _leave_closed_terminal()
        workers = child_pids()
        if not workers:
            raise _StoppedBeforeStart(name)
        for pid in workers:
            try:
                # torchrun starts each worker in its own session: its group is the worker and its
                # DataLoader processes (which ignore the signal; the worker decides).
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signum)
                else:
                    os.kill(pid, signum)
            except ProcessLookupError:
                pass
        try:
            sys.stderr.write(f"launcher: {name} passed on to {len(workers)} training process(es); they save a "
                             f"resumable checkpoint at their next step\n")
            sys.stderr.flush()
        except OSError:
            pass


def main(argv=None):
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(sys.argv[1:] if argv is None else argv)
    # torch logs every worker that ends with a non-zero status as "failed"; 75 is a requested stop.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(
        lambda record: f"exitcode: {EXIT_REQUEUE})" not in record.getMessage())
    args.signals_to_handle = "SIGQUIT"  # the stop signals are handled here, not by torchrun
    forwarder = Forwarder()
    forwarder.install()
    try:
        torchrun.run(args)
    except _StoppedBeforeStart as e:
        print(f"launcher: stopped by {e} before the training processes started; nothing to save: rerun the "
              f"same command (exit status {EXIT_REQUEUE})", file=sys.stderr, flush=True)
        return EXIT_REQUEUE
    except ChildFailedError as e:
        codes = sorted({f.exitcode for f in e.failures.values()})
        if codes == [EXIT_REQUEUE]:
            print(f"launcher: the training processes stopped to be resumed: rerun the same command to continue "
                  f"(exit status {EXIT_REQUEUE})", file=sys.stderr, flush=True)
            return EXIT_REQUEUE
        print("launcher: " + "; ".join(f"rank {rank} ended with status {f.exitcode}"
                                       for rank, f in sorted(e.failures.items())),
              file=sys.stderr, flush=True)
        return next((c for c in codes if c > 0), 1)
    finally:
        forwarder.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())

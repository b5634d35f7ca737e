"""One run per output folder: a run holds ``<--output_dir>/run.lock`` (its host, pid and start
time) from its start to its end, whatever the end; a second run into the folder refuses to start
and names the holder. A lock left by a run that died without releasing it (kill -9, a crashed node)
is taken over, with a word: on this host when its process is gone, on any host when it belongs to
this same SLURM job (a requeued job runs once at a time). Rank 0 holds the lock for all ranks.

Every run also writes ``args.json`` there at its start: the resolved options and the code's commit.
"""
import atexit
import json
import os
import socket
import sys

from . import distributed as dist
from .checkpoint import args_dict
from .cli import AT_END, UserError
from .files import write_json
from .provenance import code_version, now

LOCK = "run.lock"
_HELD = []


def _process_start(pid):
    """The start time of process ``pid`` in clock ticks since boot (tells a reused pid apart), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return start is None or _process_start(pid) in (None, start)


def _holder_text(holder, path):
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
            + (f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else "") + f"; lock file {path}")


class RunLock:
    def __init__(self, folder):
        self.path = os.path.join(folder, LOCK)
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                       "started": now(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                       "command": " ".join(sys.argv)}

    def _create(self):
        """The lock file, whole from its first moment (linked into place: fails if one exists)."""
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.record, f)
            f.write("\n")
        try:
            os.link(tmp, self.path)
        finally:
            os.remove(tmp)

    def _stale(self, holder):
        """Why the holder's lock may be taken over, or None while it may still be running."""
        job = os.environ.get("SLURM_JOB_ID")
        if job and holder.get("slurm_job_id") == job:
            return f"it is an earlier run of this SLURM job ({job})"
        if holder.get("host") == self.record["host"] and not _alive(int(holder.get("pid", -1)),
                                                                      holder.get("process_start")):
            return "its process is no longer running"
        return None

    def acquire(self):
        for _ in range(3):
            try:
                self._create()
                _HELD.append(self)
                return self
            except FileExistsError:
                pass
            try:
                with open(self.path, encoding="utf-8") as f:
                    holder = json.load(f)
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError) as e:
                raise UserError(f"{self.path} (the lock of a run in this folder) is unreadable ({e}); delete it if no "
                                f"run uses {os.path.dirname(self.path)}") from None
            why = self._stale(holder)
            if why is None:
                raise UserError(f"{os.path.dirname(self.path)} is in use by another run ({_holder_text(holder, self.path)}); "
                                f"wait for it to end, or give this run another --output_dir (delete the lock file only "
                                f"if that run is gone)")
            print(f"taking over the lock of an earlier run in {os.path.dirname(self.path)} ("
                  f"{_holder_text(holder, self.path)}): {why}", flush=True)
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        raise UserError(f"cannot take the lock {self.path}: other runs keep taking it")

    def release(self):
        if self in _HELD:
            _HELD.remove(self)
        try:
            with open(self.path, encoding="utf-8") as f:
                mine = json.load(f) == self.record
        except (OSError, ValueError):
            return
        if mine:
            try:
                os.remove(self.path)
            except OSError:
                pass


def release_all():
    """Release the locks this process holds (at the end of an entry point, and at exit)."""
    for lock in list(_HELD):
        lock.release()


atexit.register(release_all)
AT_END.append(release_all)


def prepare(args, kind):
    """Lock ``--output_dir`` (rank 0, the refusal raised on every rank) and write args.json there."""

    def take():
        RunLock(args.output_dir).acquire()
        write_json(os.path.join(args.output_dir, "args.json"),
                   {"kind": kind, "args": args_dict(args), "code": code_version(), "command": sys.argv})
    dist.from_rank0(take)

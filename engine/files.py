"""Files a run writes for people and tools to read (reports, logs, features, args.json): each one
whole or not at all. Each is written to a temporary file beside its place, flushed to the disk and
renamed over it, so a reader sees the previous version or the new one, never a cut one; a write
that fails (a full disk, a quota, a read-only folder) removes its temporary file and ends in one
:class:`WriteError` line naming the file."""
import errno
import json
import os
import shutil
from contextlib import contextmanager

from .cli import RunError


class WriteError(RunError):
    """A file could not be written; nothing of it was left behind (``error:``, exit status 1)."""


def temporary_name(path):
    return f"{path}.tmp{os.getpid()}"


def _free(folder):
    try:
        return f"{shutil.disk_usage(folder).free / 2 ** 20:.1f} MB free in {folder}"
    except OSError:
        return f"free space of {folder} unknown"


def write_failure(path, err):
    """The :class:`WriteError` that says why ``path`` could not be written."""
    folder = os.path.dirname(os.path.abspath(path))
    # numpy's tofile reports a short write as "N requested and M written", without an errno.
    short = isinstance(err, OSError) and err.errno is None and "requested and" in str(err)
    if isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT) or short):
        why = f"no space left on device ({_free(folder)})"
    elif isinstance(err, OSError):
        why = err.strerror or str(err)
    else:
        why = str(err)
    return WriteError(f"cannot write {path}: {why}; nothing of it was written")


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename itself is atomic
        pass
    finally:
        os.close(fd)


def _give_up(tmps, path, error):
    """After a failed write: remove the temporary files; an OSError becomes the write failure that
    names ``path``."""
    for tmp in tmps:
        try:
            os.remove(tmp)
        except OSError:
            pass
    if isinstance(error, OSError):
        raise write_failure(path, error) from error


def write_together(writers):
    """Write files that belong together: ``writers`` is ``[(path, write(binary file)), ...]``;
    each is written to its temporary file in turn, and all are renamed into place only when every
    one was written (a failure names the file it hit and leaves none of them)."""
    tmps, current = [], None
    try:
        for path, write in writers:
            current = path
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            tmps.append(temporary_name(path))
            with open(tmps[-1], "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for (path, _), tmp in zip(writers, tmps):
            current = path
            os.replace(tmp, path)
        for folder in {os.path.dirname(os.path.abspath(p)) for p, _ in writers}:
            _fsync_folder(folder)
    except BaseException as e:
        _give_up(tmps, current, e)
        raise


@contextmanager
def atomic_file(path, binary=False):
    """``with atomic_file(path) as f``: a temporary file (text, UTF-8, unless ``binary``) that
    replaces ``path`` when the block ends without an error."""
    tmp = temporary_name(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(os.path.dirname(os.path.abspath(path)))
    except BaseException as e:
        _give_up([tmp], path, e)
        raise


def write_bytes(path, data):
    write_together([(path, lambda f: f.write(data))])


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent=1):
    """``obj`` as JSON (NaN and inf refused: they are not JSON)."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def append_line(path, line):
    """``path`` with ``line`` added at its end, as a new whole file: a failed write leaves the old
    file as it was, never a cut last line."""
    try:
        with open(path, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"  # a line cut by an earlier crash stays on its own
    write_bytes(path, old + line.rstrip("\n").encode("utf-8") + b"\n")


def save_figure(fig, path, **kw):
    """``fig.savefig`` to ``path`` atomically (the format from its extension)."""
    with atomic_file(path, binary=True) as f:
        fig.savefig(f, format=os.path.splitext(path)[1].lstrip(".") or "png", **kw)

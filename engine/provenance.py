"""What a result was made from: the annotation files (their rows and sha256), the code (its git
commit), the arguments and the checkpoint. Checkpoints record the data they trained on, so a
resume over edited files is refused; ranks compare theirs before they start, so a stale
node-local copy cannot mix into a run; metrics.json records all of it."""
import datetime
import gzip
import os
import subprocess

from datasets.build import has_validation_split, pretraining_file, split_file
from models.tuning import sha256_file

from . import distributed as dist
from .cli import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fingerprint(path):
    """``{"path", "rows", "sha256"}`` of an annotation file (rows: its non-blank lines)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            rows = sum(1 for line in f if line.strip())
        digest = sha256_file(path)
    except OSError:
        return {"path": os.path.abspath(path), "rows": None, "sha256": None}  # the dataset says what is wrong
    return {"path": os.path.abspath(path), "rows": rows, "sha256": digest}


def data_files(args, kind):
    """``{role: path}`` of the annotation files a run reads: ``pretrain``; ``train``, ``val`` (when
    there is one) and ``test`` for fine-tuning; ``test`` under --eval."""
    if kind == "pretrain":
        return {"pretrain": pretraining_file(args)}
    if getattr(args, "eval", False):
        splits = ("test",)
    else:
        splits = ("train", "val", "test") if has_validation_split(args.data_path) else ("train", "test")
    return {s: split_file(s, args) for s in splits}


def data_fingerprints(args, kind):
    """Fingerprints of the run's annotation files, the same on every rank (else a UserError naming
    the ranks and files). Compared before any data is loaded: ranks whose files differ in length
    would otherwise wait for each other in the first collective call of a shorter epoch."""
    mine = {role: fingerprint(path) for role, path in data_files(args, kind).items()}
    everyone = dist.all_gather_objects(mine)
    lines = []
    for role in mine:
        first = everyone[0].get(role)
        for rank, theirs in enumerate(everyone[1:], 1):
            other = theirs.get(role)
            if other is None or (other["rows"], other["sha256"]) != (first["rows"], first["sha256"]):
                lines.append(f"    {role}: rank 0 reads {_describe(first)}; rank {rank} reads {_describe(other)}")
    if lines:
        raise UserError("the processes of this run read different annotation files (a stale node-local copy?):\n"
                        + "\n".join(lines) + "\n  Give every node the same files.")
    return mine


def _describe(fp):
    if fp is None:
        return "nothing"
    if fp["sha256"] is None:
        return f"{fp['path']} (unreadable)"
    return f"{fp['path']} ({fp['rows']} rows, sha256 {fp['sha256'][:12]})"


def trained_on(fingerprints):
    """The fingerprints a checkpoint records: the files training reads (not the test split)."""
    return {role: fp for role, fp in fingerprints.items() if role != "test"}


def check_same_data(path, recorded, current, force=False):
    """Refuse to resume the checkpoint at ``path`` when the files it trained on have changed (its
    sample positions and lr schedule refer to their rows), unless ``force`` (--force_resume)."""
    if not recorded:
        return
    changed = [f"    {role}: {_describe(current[role])} now; {_describe(old)} when the checkpoint was written"
               for role, old in sorted(recorded.items())
               if role in current and (old.get("rows"), old.get("sha256")) != (current[role]["rows"],
                                                                               current[role]["sha256"])]
    if not changed:
        return
    lines = "\n".join(changed)
    if force:
        print(f"WARNING: resuming {path} over changed annotation files (--force_resume):\n{lines}")
        return
    raise UserError(f"the annotation files changed since {path} was written; its saved position and lr schedule "
                    f"refer to the old rows:\n{lines}\n  Restore the files, start a new run with another "
                    f"--output_dir, or add --force_resume True to continue over the new files.")


_CODE = {}


def code_version():
    """``{"commit", "dirty"}`` of this checkout (``"unknown"`` outside a git checkout)."""
    if not _CODE:
        def git(*cmd):
            return subprocess.run(["git", "-C", REPO, *cmd], capture_output=True, text=True, timeout=30)
        try:
            head = git("rev-parse", "HEAD")
            status = git("status", "--porcelain", "--untracked-files=no") if head.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            head = status = None
        if head is None or head.returncode != 0:
            _CODE.update(commit="unknown", dirty=None)
        else:
            _CODE.update(commit=head.stdout.strip(), dirty=bool(status.stdout.strip()) if status.returncode == 0
                         else None)
    return dict(_CODE)


def now():
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def checkpoint_record(path, checkpoint=None):
    """The checkpoint part of a report's provenance: path, sha256, epoch (on the main process,
    which writes the reports; a checkpoint of several GB takes seconds to hash)."""
    if not path or not os.path.isfile(path) or not dist.is_main_process():
        return {}
    record = {"checkpoint": os.path.abspath(path), "checkpoint_sha256": sha256_file(path)}
    if isinstance(checkpoint, dict) and checkpoint.get("epoch") is not None:
        record["epoch"] = checkpoint["epoch"]
    return record

"""Annotation files: one sample a line, `<path> <label>` or `<path> <y1> ... <yK>`.

`<path>` is a video file or a folder of frames. The release shipped CSVs with
absolute paths from the authors' machines; a prefix map (`OLD=NEW`) rewrites
them so those files work unchanged elsewhere.
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from typing import Iterable, Mapping


class AnnotationError(ValueError):
    """A malformed annotation line; the message starts with `file:line:`."""
    user_error = True  # the command line prints one error line (engine/cli.py)


@dataclass(frozen=True)
class Sample:
    path: str                          # resolved path of the video file or frame folder
    label: int | tuple[float, ...]     # class index, or regression targets
    line: int                          # 1-based line in the annotation file


def parse_prefix_map(items: Iterable[str] | Mapping[str, str] | str | None) -> dict[str, str]:
    """`['OLD=NEW', ...]` -> `{'OLD': 'NEW'}`. A dict passes through."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise ValueError(f"prefix map entry {item!r} is not of the form OLD=NEW")
        out[old] = new
    return out


def resolve_path(raw: str, data_root: str, prefix_map: Mapping[str, str]) -> str:
    # Longest prefix first, so '/data/DFEW/Clip=' wins over '/data='.
    for old in sorted(prefix_map, key=len, reverse=True):
        if raw.startswith(old):
            raw = prefix_map[old] + raw[len(old):]
            break
    return os.path.normpath(os.path.join(data_root, raw))


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _spaced_path(fields: list[str]) -> str | None:
    """The path a line seems to start with when its path holds spaces: the fields up to the last
    non-numeric one, when there are several (`my clip.mp4 3` -> `my clip.mp4`)."""
    words = [k for k, f in enumerate(fields) if not _numeric(f)]
    if not words or words[-1] == 0:
        return None
    return " ".join(fields[:words[-1] + 1])


def _lines(path: str):
    """`(line number, text)` of a UTF-8 file (plain or gzipped); a byte-order mark is dropped and
    a line that is not UTF-8 is an AnnotationError naming it."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        f = opener(path, "rb")
    except FileNotFoundError:
        raise AnnotationError(f"annotation file not found: {path}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise AnnotationError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                      f"{e.start + 1}); save the file as UTF-8") from None


def read_annotations(path, data_root: str | None = "", prefix_map=None,
                     num_classes: int | None = None,
                     num_targets: int | None = None) -> list[Sample]:
    """Parse an annotation file (plain or `.gz`) into samples.

    Relative paths resolve against `data_root`; when it is empty, against the
    folder holding the annotation file (so a self-contained dataset folder,
    like the demo's, needs no flag). Regression when `num_targets` is given,
    or when `num_classes` is not and the first line carries several values.
    Any malformed line raises AnnotationError naming `file:line`.
    """
    path = os.fspath(path)
    root = data_root or os.path.dirname(os.path.abspath(path))
    pmap = parse_prefix_map(prefix_map)
    if num_classes is not None and num_targets is not None:
        raise ValueError("give num_classes (classification) or num_targets (regression), not both")

    samples: list[Sample] = []
    if os.path.isdir(path):
        raise AnnotationError(f"{path} is a folder, not an annotation file")
    for lineno, text in _lines(path):
        fields = text.split()
        if not fields:
            continue

        inferred = False

        def fail(reason):
            # More fields than `<path> <label>` has, or targets guessed from them: a spaced path?
            spaced = _spaced_path(fields) if inferred or len(fields) != expected else None
            if spaced is not None:
                reason = (f"the path {spaced!r} holds a space, and fields are separated by spaces (`<path> <label>`): "
                          f"rename the file or folder without spaces")
            raise AnnotationError(f"{path}:{lineno}: {reason}: {text.strip()!r}")

        if num_targets is None and num_classes is None and not samples:
            # The first sample line fixes the task for the whole file.
            num_targets = len(fields) - 1 if len(fields) > 2 else None
            inferred = num_targets is not None
        expected = 1 + (num_targets if num_targets is not None else 1)
        if len(fields) != expected:
            fail(f"expected {expected} space-separated fields, found {len(fields)}")
        raw_path, values = fields[0], fields[1:]
        if num_targets is not None:
            try:
                label = tuple(float(v) for v in values)
            except ValueError:
                fail("non-numeric regression target")
            if not all(math.isfinite(v) for v in label):
                fail("non-finite regression target (nan or inf)")
        else:
            try:
                label = int(values[0])
            except ValueError:
                fail("label is not an integer")
            if label < 0 or (num_classes is not None and label >= num_classes):
                fail(f"label {label} out of range for {num_classes} classes"
                     if num_classes is not None else f"negative label {label}")
        samples.append(Sample(resolve_path(raw_path, root, pmap), label, lineno))
    if not samples:
        raise AnnotationError(f"{path}: no samples")
    return samples

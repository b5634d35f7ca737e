"""Bad-data policy shared by the datasets.

An unreadable sample (missing, empty, truncated, undecodable) is reported with a warning naming
the file and replaced by the next readable sample in annotation order (deterministic: a random redraw would
change the data order of a resumed run, and never ends when every sample is bad). The bad samples are marked in a table in shared memory, so every
DataLoader worker of every epoch sees the same set: each file is counted once, and the cap
(`max_bad_fraction` of the dataset, `--max_bad_fraction`) applies to the whole dataset, not to
one worker's share. Past the cap, loading stops with the list. `strict=True` raises at the first
bad sample.
"""
from __future__ import annotations

import warnings

import torch

from .annotations import Sample
from .video_io import VideoReadError

DEFAULT_MAX_BAD_FRACTION = 0.01


class BadSampleError(RuntimeError):
    """A bad sample in strict mode."""
    user_error = True  # the command line prints one error line (engine/cli.py)


class TooManyBadSamples(RuntimeError):
    """More bad samples than the dataset's cap allows; the message lists them."""
    user_error = True  # the command line prints one error line (engine/cli.py)


class BadSampleWarning(UserWarning):
    pass


class SampleGuard:
    def __init__(self, samples: list[Sample], strict: bool = False,
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION):
        self.samples = samples
        self.strict = strict
        self.max_bad_fraction = max_bad_fraction
        # 1 = known bad. Shared memory survives the fork (or pickling) into DataLoader workers,
        # so what one worker finds, all see, in this epoch and the next ones.
        self.known_bad = torch.zeros(len(samples), dtype=torch.uint8).share_memory_()
        self.reasons: dict[int, str] = {}   # what this process saw; the table has the rest

    def _describe(self, index: int) -> str:
        s = self.samples[index]
        reason = self.reasons.get(index, "unreadable (found by another worker)")
        return f"{s.path} (annotation line {s.line}): {reason}"

    def _mark(self, index: int, reason: str) -> int:
        self.reasons[index] = reason
        self.known_bad[index] = 1
        return int(self.known_bad.sum())

    def load(self, index: int, fn):
        """`fn(i)` loads sample `i`; returns `(result, index actually used)`."""
        n = len(self.samples)
        for k in range(n):
            j = (index + k) % n
            if self.known_bad[j]:
                continue
            try:
                return fn(j), j
            except (VideoReadError, OSError) as e:
                if self.strict:
                    raise BadSampleError(f"{self.samples[j].path} (annotation line "
                                         f"{self.samples[j].line}): {e}") from e
                count = self._mark(j, str(e))
                warnings.warn(f"bad sample, replaced by the next one: {self._describe(j)}",
                              BadSampleWarning, stacklevel=2)
                if count > self.max_bad_fraction * n:
                    bad = torch.nonzero(self.known_bad).flatten().tolist()
                    listing = "\n  ".join(self._describe(b) for b in bad)
                    raise TooManyBadSamples(
                        f"{count} of {n} samples ({100 * count / n:.2f}%) are unreadable, more than "
                        f"--max_bad_fraction {self.max_bad_fraction:g} ({100 * self.max_bad_fraction:.2f}%) "
                        f"allows (run `python -m datasets.check` on the annotation file):\n  {listing}")
        raise TooManyBadSamples("no readable sample in the dataset")

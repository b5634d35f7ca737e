"""Bad-data policy shared by the datasets.

An unreadable sample (missing, empty, truncated, undecodable) is reported with a
warning naming the file and replaced by the next readable sample in annotation
order (deterministic, unlike the release's redraw-forever loop). When more than
`max_bad_fraction` of the dataset turns out bad, loading stops with the list.
`strict=True` raises at the first bad sample.
"""
from __future__ import annotations

import warnings

from torch.utils.data import get_worker_info

from .annotations import Sample
from .video_io import VideoReadError

DEFAULT_MAX_BAD_FRACTION = 0.01


class BadSampleError(RuntimeError):
    """A bad sample in strict mode."""


class TooManyBadSamples(RuntimeError):
    """More bad samples than the dataset's cap allows; the message lists them."""


class BadSampleWarning(UserWarning):
    pass


class SampleGuard:
    def __init__(self, samples: list[Sample], strict: bool = False,
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION):
        self.samples = samples
        self.strict = strict
        self.max_bad_fraction = max_bad_fraction
        self.bad: dict[int, str] = {}   # per process: each DataLoader worker keeps its own

    def _limit(self) -> float:
        # A worker only meets its share of the dataset, so its cap is that share's.
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        return self.max_bad_fraction * len(self.samples) / workers

    def _describe(self, index: int) -> str:
        s = self.samples[index]
        return f"{s.path} (annotation line {s.line}): {self.bad[index]}"

    def load(self, index: int, fn):
        """`fn(i)` loads sample `i`; returns `(result, index actually used)`."""
        n = len(self.samples)
        for k in range(n):
            j = (index + k) % n
            if j in self.bad:
                continue
            try:
                return fn(j), j
            except (VideoReadError, OSError) as e:
                if self.strict:
                    raise BadSampleError(f"{self.samples[j].path} (annotation line "
                                         f"{self.samples[j].line}): {e}") from e
                self.bad[j] = str(e)
                warnings.warn(f"bad sample, replaced by the next one: {self._describe(j)}",
                              BadSampleWarning, stacklevel=2)
                if len(self.bad) > self._limit():
                    listing = "\n  ".join(self._describe(b) for b in sorted(self.bad))
                    raise TooManyBadSamples(
                        f"{len(self.bad)} bad samples met, more than max_bad_fraction="
                        f"{self.max_bad_fraction} of {n} allows "
                        f"(run `python -m datasets.check` on the annotation file):\n  {listing}")
        raise TooManyBadSamples("no readable sample in the dataset")

"""Progress lines (iteration, ETA, loss, lr, grad norm, throughput), TensorBoard, log.txt."""
import datetime
import json
import os
import time
from collections import defaultdict, deque

import torch

from .distributed import is_main_process
from .files import append_line, write_failure
from .metrics import finite_metrics


class SmoothedValue:
    """Windowed median/average plus global average of a scalar series."""

    def __init__(self, window_size=20, fmt="{median:.4f} ({global_avg:.4f})"):
        self.deque = deque(maxlen=window_size)
        self.total, self.count, self.fmt = 0.0, 0, fmt

    def update(self, value, n=1):
        self.deque.append(value)
        self.count += n
        self.total += value * n

    @property
    def median(self):
        return sorted(self.deque)[len(self.deque) // 2] if self.deque else 0.0

    @property
    def avg(self):
        return sum(self.deque) / max(len(self.deque), 1)

    @property
    def global_avg(self):
        return self.total / max(self.count, 1)

    @property
    def value(self):
        return self.deque[-1] if self.deque else 0.0

    def __str__(self):
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    """Logs every ``print_freq`` iterations; values are only read (synced) at those points."""

    FORMATS = {"lr": "{value:.3e}", "weight_decay": "{value:.4f}"}

    def __init__(self, delimiter="  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for k, v in kwargs.items():
            if v is None:
                continue
            if torch.is_tensor(v):
                v = v.item()
            if k not in self.meters and k in self.FORMATS:
                self.meters[k] = SmoothedValue(fmt=self.FORMATS[k])
            self.meters[k].update(float(v))

    def __str__(self):
        return self.delimiter.join(f"{k}: {v}" for k, v in self.meters.items())

    def log_every(self, iterable, print_freq, header="", samples_per_iter=None, start=0):
        """Yields ``(index, item, should_log)``, indices from ``start`` (an epoch resumed part-way);
        prints a progress line whenever ``should_log``."""
        total = start + len(iterable)
        begin = time.time()
        data_time = SmoothedValue(fmt="{avg:.3f}")
        iter_time = SmoothedValue(fmt="{avg:.3f}")
        end = time.time()
        width = len(str(total))
        for i, item in enumerate(iterable, start):
            data_time.update(time.time() - end)
            should_log = i % print_freq == 0 or i == total - 1
            yield i, item, should_log
            iter_time.update(time.time() - end)
            if should_log:
                eta = datetime.timedelta(seconds=int(iter_time.global_avg * (total - i - 1)))
                extra = ""
                if samples_per_iter:
                    extra = f"  clips/s: {samples_per_iter / max(iter_time.avg, 1e-9):.1f}"
                if torch.cuda.is_initialized():  # a run on the GPU (mae's and VideoMAE's progress lines say it too)
                    extra += f"  max mem: {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MB"
                print(f"{header} [{i:>{width}}/{total}]  eta: {eta}  {self}  time: {iter_time}  data: {data_time}"
                      f"{extra}", flush=True)
            end = time.time()
        total_time = datetime.timedelta(seconds=int(time.time() - begin))
        print(f"{header} total time: {total_time} ({(time.time() - begin) / max(total - start, 1):.3f} s / it)",
              flush=True)


class TensorboardLogger:
    """Scalars in a TensorBoard event file, written in this thread (tensorboardX's own writer
    thread dies on a full disk, and the next writes then wait forever). A failed write stops the
    TensorBoard log with one warning; log.txt and the checkpoints go on."""

    def __init__(self, log_dir):
        self.writer, self.log_dir = None, log_dir
        if log_dir and is_main_process():
            from tensorboardX.event_file_writer import EventsWriter  # only where a run writes TensorBoard logs
            self._guard(lambda: os.makedirs(log_dir, exist_ok=True))
            self._guard(lambda: setattr(self, "writer", EventsWriter(os.path.join(log_dir, "events"))))

    def _guard(self, write):
        if self.log_dir is None:
            return
        try:
            write()
        except OSError as e:
            print(f"WARNING: {write_failure(self.log_dir, e)}; TensorBoard logging stops here, log.txt and the "
                  f"checkpoints go on", flush=True)
            self.writer, self.log_dir = None, None

    def update(self, head="scalar", step=0, **kwargs):
        if self.writer is None:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar
        for k, v in kwargs.items():
            if v is None:
                continue
            event = Event(wall_time=time.time(), step=int(step),
                          summary=scalar(f"{head}/{k}", float(v.item() if torch.is_tensor(v) else v)))
            self._guard(lambda: self.writer.write_event(event))
            if self.writer is None:
                return

    def flush(self):
        if self.writer is not None:
            self._guard(self.writer.flush)


class StepTrace:
    """``--trace_steps``: one JSON line per training iteration of the main process (its samples)."""

    def __init__(self, path):
        self.file = None
        if path and is_main_process():
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")

    def write(self, **record):
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self):
        if self.file is not None:
            self.file.close()


def append_log(output_dir, record):
    """One JSON object per epoch in ``log.txt`` (main process only), added whole or not at all."""
    if output_dir and is_main_process():
        append_line(os.path.join(output_dir, "log.txt"), json.dumps(finite_metrics(record), allow_nan=False))

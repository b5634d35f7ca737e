"""Fine-tuning loss and (multi-view, distributed) prediction."""
import os

import numpy as np
import torch

from .device_batch import ModelInput, to_device
from .interrupt import StopDuringEvaluation
from .runtime import autocast
from .distributed import all_gather_objects
from .logger import MetricLogger
from .reports import clip_average, merge_views, metrics_from_frame, predictions_frame


def mix_video(mixup_fn, videos, targets):
    """timm's Mixup/CutMix on clips: time folded into channels, so one box covers every frame."""
    b, c, t, h, w = videos.shape
    mixed, targets = mixup_fn(videos.reshape(b, c * t, h, w), targets)
    return mixed.reshape(b, c, t, h, w), targets


def classification_loss(model, criterion, device, amp, mixup_fn=None, model_input=None):
    """``compute_loss(batch)`` for :func:`engine.train_step.train_epoch`: uint8 clips, targets, indices.

    ``model_input`` (:class:`engine.device_batch.ModelInput`, plain normalisation by default) turns
    the clips into the model's input on the device, random erasing included; mixup comes after it."""
    model_input = model_input or ModelInput(device)

    def compute_loss(batch):
        videos = model_input(to_device(batch[0], device))
        targets = to_device(batch[1], device)
        if mixup_fn is not None:
            videos, targets = mix_video(mixup_fn, videos, targets)
        with autocast(device, amp):
            outputs = model(videos)
        return criterion(outputs.float(), targets)
    return compute_loss


@torch.no_grad()
def predict(model, loader, device, amp, args, header="Test:", with_features=False, stop=None):
    """Outputs for every (video, view) this process sees, gathered from all processes.

    Returns records ``(video_index, view_index, output, target)`` (padding duplicates are dropped
    later by view merging) and, optionally, ``{(video, view): feature}``. A ``stop`` requested on
    any rank ends it at the next batch with :class:`engine.interrupt.StopDuringEvaluation`.
    """
    model.eval()
    logger = MetricLogger()
    model_input = ModelInput(device)
    records, features = [], {}
    for _, batch, _ in logger.log_every(loader, args.print_freq, header):
        if stop is not None and stop.requested():
            raise StopDuringEvaluation(header)
        videos, targets = model_input(to_device(batch[0], device)), batch[1]
        if len(batch) >= 4:
            video_ids, view_ids = batch[2].tolist(), batch[3].tolist()
        else:
            video_ids, view_ids = batch[2].tolist(), [0] * len(videos)
        with autocast(device, amp):
            out = model(videos, save_feature=with_features)
        if with_features:
            out, feats = out
            for v, w, f in zip(video_ids, view_ids, feats.float().cpu().numpy()):
                features[(v, w)] = f
        outputs = out.float().cpu().numpy()
        targets = targets.cpu().numpy()
        records += [(v, w, o, t) for v, w, o, t in zip(video_ids, view_ids, outputs, targets)]
    records = [r for part in all_gather_objects(records) for r in part]
    if with_features:
        merged = {}
        for part in all_gather_objects(features):
            merged.update(part)
        features = merged
    return records, features


def evaluate_records(records, dataset, info, names, args):
    """Merged per-video frame (pred.csv rows) and the task's metrics."""
    task = "regression" if info.task == "regression" else "classification"
    videos, scores, targets = merge_views(records, task)
    if len(videos) < len(dataset.samples):
        # Unreadable videos were replaced by the loader (with a warning); their views collapse
        # onto the replacement's and drop out here, so the metrics cover the readable ones only.
        print(f"WARNING: {len(dataset.samples) - len(videos)} of {len(dataset.samples)} videos could not be read "
              f"and are not in the metrics")
    ids = [str(dataset.samples[v].path) for v in videos]
    if args.data_root:
        ids = [os.path.relpath(i, args.data_root) if os.path.isabs(i) else i for i in ids]
    if task == "regression":
        targets = np.stack([np.asarray(t, float).reshape(-1) for t in targets])
    else:
        targets = [int(np.asarray(t).reshape(-1)[0]) for t in targets]
    frame = predictions_frame(ids, scores, targets, task, names)
    if info.task == "clip_classification":
        frame = clip_average(frame, args.video_id_regex, names)
    return frame, metrics_from_frame(frame, task, names)

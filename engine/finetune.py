"""Fine-tuning epoch and (multi-view, distributed) prediction."""
import numpy as np
import torch

from .common import autocast
from .distributed import all_gather_objects
from .logger import MetricLogger
from .reports import clip_average, merge_views, metrics_from_frame, predictions_frame


def mix_video(mixup_fn, videos, targets):
    """timm's Mixup/CutMix on clips: time folded into channels, so one box covers every frame."""
    b, c, t, h, w = videos.shape
    mixed, targets = mixup_fn(videos.reshape(b, c * t, h, w), targets)
    return mixed.reshape(b, c, t, h, w), targets


def train_one_epoch(model, criterion, loader, stepper, device, epoch, steps_per_epoch, amp, args,
                    mixup_fn=None, tb=None):
    model.train()
    logger = MetricLogger()
    header = f"Epoch: [{epoch}]"
    loss_sum = torch.zeros((), device=device)
    count = 0
    for it, batch, should_log in logger.log_every(loader, args.print_freq, header,
                                                  samples_per_iter=args.batch_size * args.world_size):
        if it // stepper.update_freq >= steps_per_epoch:
            break
        videos, targets = batch[0], batch[1]
        global_step = stepper.start(it, epoch, steps_per_epoch)
        videos = videos.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            videos, targets = mix_video(mixup_fn, videos, targets)
        with autocast(device, amp):
            outputs = model(videos)
        loss = criterion(outputs.float(), targets)
        norm = stepper(loss, it, global_step, want_norm=should_log)
        loss_sum += loss.detach()
        count += 1
        if should_log:
            stepper.log(logger, tb, loss, norm, global_step)
    return stepper.epoch_stats(loss_sum, count)


@torch.no_grad()
def predict(model, loader, device, amp, args, header="Test:", with_features=False):
    """Outputs for every (video, view) this process sees, gathered from all processes.

    Returns records ``(video_index, view_index, output, target)`` (padding duplicates are dropped
    later by view merging) and, optionally, ``{(video, view): feature}``.
    """
    model.eval()
    logger = MetricLogger()
    records, features = [], {}
    for _, batch, _ in logger.log_every(loader, args.print_freq, header):
        videos, targets = batch[0].to(device, non_blocking=True), batch[1]
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
    ids = [dataset.samples[v].path_for_report if hasattr(dataset.samples[v], "path_for_report")
           else str(dataset.samples[v].path) for v in videos]
    if args.data_root:
        import os
        ids = [os.path.relpath(i, args.data_root) if os.path.isabs(i) else i for i in ids]
    if task == "regression":
        targets = np.stack([np.asarray(t, float).reshape(-1) for t in targets])
    else:
        targets = [int(np.asarray(t).reshape(-1)[0]) for t in targets]
    frame = predictions_frame(ids, scores, targets, task, names)
    if info.task == "clip_classification":
        frame = clip_average(frame, args.video_id_regex, names)
    return frame, metrics_from_frame(frame, task, names)

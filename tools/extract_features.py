"""Extract SVFAP features of many videos to .npy files with an index CSV; resumable, torchrun-ready.

Sources: an annotation CSV (``<path> <label...>`` as the datasets read it; --data_root and
--prefix_map resolve paths) or a folder of videos / frame folders. Checkpoints: fine-tuned
(``run_finetune.py``) or pre-trained (``run_pretrain.py``); the model and its input come from the
checkpoint's ``args``, flags override them. Clips are seen as the test split sees them.

What is saved per clip (--features):
  pooled  fine-tuned: the classifier's input, LayerNorm(mean of the last stage's tokens) (C,)
          pre-trained: the mean of the encoder output (the stages fused and normed, all tokens
          visible: what the decoder reads) (C,)
  tokens  fine-tuned: the last stage's token map (T_last, S, C) before pooling
          pre-trained: the fused, normed encoder token map (T, S, C)
Clips per video (--windows): ``centre`` (one, in the middle of the test split's stride grid),
``uniform`` (--num_segments, as the test split) or ``sliding`` (covering the video, --window_stride frames apart).

Output (--output_dir): shards/shard_NNNNN.npy (the clips of --shard_size consecutive videos) and
shard_NNNNN.csv, then index.csv (one row per clip: video, path, label, window, start_frame,
end_frame, file, row) and failed.csv (videos that could not be read). Shards are written under a
temporary name and renamed, so a killed run leaves only complete shards; rerunning the same
command skips them (settings.json records the settings and the checkpoint's sha256: a rerun with
other settings, or with another file at the checkpoint's path, is refused) (--max_shards N stops after N new shards, for time-limited jobs). Under
torchrun, shard k goes to rank k % world_size; rank 0 writes the index. Load everything with
``tools.extract_features.load_features(output_dir)``.

Examples:
  python -m tools.extract_features --checkpoint dfew/checkpoint-99.pth --csv DFEW/test.csv --output_dir feats/
  python -m tools.extract_features --checkpoint pretrain/checkpoint-99.pth videos/ --features tokens \\
      --windows sliding --output_dir feats_tokens/ --batch_size 32 --num_workers 8
  torchrun --nproc_per_node 4 -m tools.extract_features --checkpoint ckpt.pth --csv train.csv --output_dir feats/
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from datasets.annotations import read_annotations
from datasets.inference import ClipSpec, load_windows
from datasets.registry import sampling_rate_of
from datasets.sampling import WINDOW_MODES, plan_windows
from datasets.video_io import BACKENDS, DEFAULT_BACKEND, VideoReadError, count_frames, find_inputs
from engine import distributed as dist
from engine.cli import HelpFormatter, UserError, run_entry
from engine.options import add_model_options, typed_options
from engine.runtime import PRECISIONS, autocast, pick_device
from engine.files import write_json, write_together
from models import model_from_checkpoint
from models.tuning import sha256_file
from preprocess.face_crop import frame_cropper
from preprocess.faces import CROP_MARGIN

# Settings that change the numbers: a resumed run must use the same ones.
RESUME_KEYS = ("checkpoint", "checkpoint_sha256", "features", "windows", "window_stride", "num_segments", "crop", "crop_size",
               "crop_margin", "shard_size", "dtype", "config", "videos")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="*", help="video files, frame folders, or folders of them (or use --csv)")
    p.add_argument("--csv", default=None, help="annotation file: one '<path> <label...>' per line")
    p.add_argument("--data_root", default="", help="root the CSV's relative paths are resolved against")
    p.add_argument("--prefix_map", default=[], nargs="*", help="OLD=NEW path prefix rewrites for the CSV")
    p.add_argument("--checkpoint", required=True, help="fine-tuned or pre-trained checkpoint")
    p.add_argument("--output_dir", required=True, help="shards, index.csv and failed.csv go here")
    p.add_argument("--features", default="pooled", choices=["pooled", "tokens"], help="what is saved per clip (see above)")
    p.add_argument("--windows", default="centre", choices=WINDOW_MODES, help="which clips of each video (see above)")
    p.add_argument("--num_segments", type=int, default=2, help="clips per video with --windows uniform")
    p.add_argument("--window_stride", type=int, default=None, help="frames between sliding window starts")
    p.add_argument("--crop", action="store_true", help="crop faces first (preprocess/face_crop.py's tracker)")
    p.add_argument("--crop_size", type=int, default=224, help="face crop side before the model's resize")
    p.add_argument("--crop_margin", type=float, default=CROP_MARGIN,
                   help="fraction of the face box added on each side of the crop")
    p.add_argument("--batch_size", type=int, default=16, help="clips per forward pass")
    p.add_argument("--num_workers", type=int, default=4, help="decoding processes")
    p.add_argument("--shard_size", type=int, default=256, help="videos per output shard")
    p.add_argument("--max_shards", type=int, default=None, help="stop after this many new shards (rerun resumes)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage type")
    p.add_argument("--amp", default="none", choices=list(PRECISIONS), help="autocast for the forward pass")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS, help="video decoder")
    p.add_argument("--device", default=None, help="default: cuda (the LOCAL_RANK GPU under torchrun) if available")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable video")
    add_model_options(p)
    return p


# -- the feature model --------------------------------------------------------------------------

class Features(nn.Module):
    """Pooled features or token maps of a fine-tuned model (what its classifier reads; the last
    stage's map) or of a pre-trained one (its encoder with nothing masked)."""

    def __init__(self, model, kind):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x):
        if hasattr(self.model, "encoder"):
            tokens = self.model.encode(x)
        elif self.kind == "pooled":
            return self.model.forward_features(x)
        else:
            tokens = self.model.forward_tokens(x)
        return tokens.mean((1, 2)) if self.kind == "pooled" else tokens


# -- inputs -------------------------------------------------------------------------------------

def list_videos(args):
    """``(paths, labels)`` from --csv or the positional inputs, in a fixed order (shards depend on it)."""
    if args.csv and args.inputs:
        raise UserError("give a --csv or input paths, not both")
    if args.csv:
        if not os.path.isfile(args.csv):
            raise UserError(f"annotation file not found: {args.csv}")
        samples = read_annotations(args.csv, args.data_root, args.prefix_map)
        return [s.path for s in samples], [" ".join(map(str, s.label)) if isinstance(s.label, tuple) else s.label
                                           for s in samples]
    if not args.inputs:
        raise UserError("nothing to extract: give --csv FILE or video paths / folders")
    paths = find_inputs(args.inputs, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    return paths, [""] * len(paths)


class ShardVideos(torch.utils.data.Dataset):
    """The clips of each video of a shard; an unreadable video gives its error instead."""

    def __init__(self, paths, opts, spec, num_frames, rate):
        self.paths, self.opts, self.spec = paths, opts, spec
        self.num_frames, self.rate = num_frames, rate
        self.crop_faces = None
        if opts.crop:
            self.crop_faces = frame_cropper(opts.crop_size, opts.crop_margin)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path, o = self.paths[i], self.opts
        try:
            n = count_frames(path, o.backend)
            windows = plan_windows(n, self.num_frames, self.rate, o.windows, o.window_stride, o.num_segments)
            batch = load_windows(path, windows, self.spec, o.backend, self.crop_faces)
            return i, batch.clips, [(int(w[0]), int(w[-1])) for w in windows], None
        except (VideoReadError, OSError) as e:
            return i, None, None, f"{type(e).__name__}: {e}"


# -- shards -------------------------------------------------------------------------------------

def shard_paths(output_dir, k):
    base = os.path.join(output_dir, "shards", f"shard_{k:05d}")
    return base + ".npy", base + ".csv"


def shard_done(output_dir, k):
    return os.path.exists(shard_paths(output_dir, k)[1])  # the CSV is renamed last


@torch.no_grad()
def extract_shard(feature_model, paths, labels, first_video, opts, spec, num_frames, rate, device, amp):
    """Features ``(clips, ...)`` and rows for the videos of one shard."""
    data = ShardVideos(paths, opts, spec, num_frames, rate)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=opts.num_workers,
                                         persistent_workers=False)
    feats, rows, failed, pending = [], [], [], []

    def flush():
        clips = torch.cat([c for c, _ in pending])
        for b in range(0, len(clips), opts.batch_size):
            with autocast(device, amp):
                out = feature_model(clips[b:b + opts.batch_size].to(device))
            feats.append(out.float().cpu().numpy().astype(opts.dtype))
        for _, meta in pending:
            rows.extend(meta)
        pending.clear()

    for i, clips, spans, error in loader:
        video = first_video + i
        if error is not None:
            if opts.strict:
                raise UserError(f"{paths[i]}: {error}")
            failed.append({"video": video, "path": paths[i], "error": error})
            continue
        pending.append((clips, [{"video": video, "path": paths[i], "label": labels[i], "window": w,
                                 "start_frame": s, "end_frame": e} for w, (s, e) in enumerate(spans)]))
        if sum(len(c) for c, _ in pending) >= opts.batch_size:
            flush()
    if pending:
        flush()
    return (np.concatenate(feats) if feats else None), rows, failed


def save_shard(output_dir, k, feats, rows, failed):
    """The shard's array and its CSV, both whole or neither (the CSV, which marks it done, last)."""
    frame = pd.DataFrame(rows + [{**f, "window": -1} for f in failed],
                         columns=["video", "path", "label", "window", "start_frame", "end_frame", "error"])
    npy, csv = shard_paths(output_dir, k)
    write_together([(npy, lambda f: np.save(f, feats if feats is not None else np.zeros((0,), np.float32))),
                    (csv, lambda f: f.write(frame.to_csv(index=False).encode("utf-8")))])


def write_index(output_dir, num_shards):
    """index.csv over all shards (rows in video order) and failed.csv."""
    parts, failed = [], []
    for k in range(num_shards):
        npy, csv = shard_paths(output_dir, k)
        frame = pd.read_csv(csv, keep_default_na=False)
        bad = frame["window"] == -1
        failed.append(frame[bad].drop(columns=["window", "start_frame", "end_frame"]))
        ok = frame[~bad].drop(columns=["error"]).reset_index(drop=True)
        ok["file"] = os.path.relpath(npy, output_dir)
        ok["row"] = np.arange(len(ok))
        parts.append(ok)
    index = pd.concat(parts, ignore_index=True)
    failed = pd.concat(failed, ignore_index=True)
    write_together([(os.path.join(output_dir, "index.csv"), lambda f: f.write(index.to_csv(index_label="index").encode())),
                    (os.path.join(output_dir, "failed.csv"), lambda f: f.write(failed.to_csv(index=False).encode()))])
    return index


def load_features(output_dir, mmap=False):
    """``(features, index DataFrame)``: all clips in index.csv order (row i of the array = index row i)."""
    index = pd.read_csv(os.path.join(output_dir, "index.csv"), index_col="index", keep_default_na=False)
    arrays = {f: np.load(os.path.join(output_dir, f), mmap_mode="r" if mmap else None) for f in index["file"].unique()}
    feats = np.concatenate([arrays[f] for f in index["file"].unique()]) if arrays else np.zeros((0,))
    return feats, index


def check_resume(output_dir, settings):
    """A rerun must not mix features made with different settings into one output folder."""
    path = os.path.join(output_dir, "settings.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        changed = [k for k in RESUME_KEYS if json.dumps(old.get(k), sort_keys=True) != json.dumps(settings.get(k), sort_keys=True)]
        if changed == ["checkpoint_sha256"]:
            raise UserError(f"{output_dir} holds features of another file at {settings['checkpoint']} (sha256 "
                            f"{str(old.get('checkpoint_sha256'))[:12]} then, {settings['checkpoint_sha256'][:12]} now): "
                            f"its shards would mix two models; use a new --output_dir or delete it")
        if changed:
            raise UserError(f"{output_dir} holds features made with other settings ({', '.join(changed)} differ); "
                            f"use a new --output_dir or delete it")
    elif dist.is_main_process():
        write_json(path, settings)


def run(argv=None):
    args = get_parser().parse_args(argv)
    if args.batch_size < 1 or args.shard_size < 1:
        raise UserError("--batch_size and --shard_size must be at least 1")
    paths, labels = list_videos(args)
    placement = dist.init_distributed_mode(str(pick_device(args.device)))
    rank, world_size, device = placement["rank"], placement["world_size"], torch.device(placement["device"])
    model, cfg = model_from_checkpoint(args.checkpoint, typed_options(args), args.force_config)
    name = cfg["model"]
    feature_model = Features(model, args.features).to(device)
    embed = model.encoder.patch_embed if hasattr(model, "encoder") else model.patch_embed
    rate = sampling_rate_of(cfg)
    spec = ClipSpec(embed.img_size[0], cfg.get("short_side_size"), resize=cfg.get("frame_resize"))
    amp = PRECISIONS[args.amp]

    num_shards = -(-len(paths) // args.shard_size)
    settings = {**{k: getattr(args, k) for k in RESUME_KEYS if hasattr(args, k)},
                "checkpoint": os.path.abspath(args.checkpoint), "checkpoint_sha256": sha256_file(args.checkpoint),
                "model": name, "sampling_rate": rate,
                "config": dict(cfg), "videos": len(paths)}
    os.makedirs(args.output_dir, exist_ok=True)
    dist.barrier()
    check_resume(args.output_dir, settings)
    mine = [k for k in range(num_shards) if k % world_size == rank]
    todo = [k for k in mine if not shard_done(args.output_dir, k)]
    print(f"{name} ({args.features}, {args.windows} windows, clips of {embed.num_frames} frames every {rate}): "
          f"{len(paths)} videos in {num_shards} shards, {len(mine) - len(todo)} of this process's {len(mine)} done")
    if args.max_shards is not None:
        todo = todo[:args.max_shards]
    from tqdm import tqdm
    for k in tqdm(todo, desc=f"shards (rank {rank})", disable=not todo):
        lo, hi = k * args.shard_size, min(len(paths), (k + 1) * args.shard_size)
        feats, rows, failed = extract_shard(feature_model, paths[lo:hi], labels[lo:hi], lo, args, spec,
                                            embed.num_frames, rate, device, amp)
        save_shard(args.output_dir, k, feats, rows, failed)
    dist.barrier()
    done = all(shard_done(args.output_dir, k) for k in range(num_shards))
    status = 0
    if dist.is_main_process():
        if done:
            index = write_index(args.output_dir, num_shards)
            bad = pd.read_csv(os.path.join(args.output_dir, "failed.csv"))
            shape = np.load(os.path.join(args.output_dir, index["file"].iloc[0]), mmap_mode="r").shape[1:] \
                if len(index) else ()
            print(f"{len(index)} clips of {index['video'].nunique() if len(index) else 0} videos, feature shape "
                  f"{tuple(shape)}: {os.path.join(args.output_dir, 'index.csv')}"
                  + (f"; {len(bad)} unreadable videos in failed.csv" if len(bad) else ""))
            status = 1 if len(bad) else 0
        else:
            left = sum(not shard_done(args.output_dir, k) for k in range(num_shards))
            print(f"stopped with {left} of {num_shards} shards to go: rerun the same command to continue")
            status = 3
    dist.cleanup()
    return status


def main(argv=None):
    """Exit status: 0 done, 1 some inputs failed, 2 a usage or checkpoint error (message on stderr),
    3 stopped by --max_shards with shards to go (rerun to continue)."""
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

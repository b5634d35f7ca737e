"""Picture what a pre-trained SVFAP masked autoencoder reconstructs: original / masked / reconstruction.

One clip of ``num_frames`` frames ``sampling_rate`` apart (the centre one, or from --start) is
resized and centre-cropped to the model's input (--face_box first takes the fixed upper-centre
face box of 224x224 VoxCeleb2 tracks, as pre-training does), tube-masked at --mask_ratio with
--seed, and reconstructed. The PNG has one column per frame and three rows: the original frames,
the masked input (masked tubelets grey), and the reconstruction (visible tubelets copied from the
input, masked tubelets predicted).

Un-normalising the prediction. The model predicts each masked tubelet in the pre-training target
space: the tubelet's pixels standardised per channel by *its own* mean and std (docs/model.md). Turning
that back into pixels needs a mean and std per masked tubelet and channel. VideoMAE's
visualisation used the ground-truth tubelet's own statistics, which the model never sees. Here
the default (--stats visible) uses only visible statistics: for each masked tubelet, the inverse-
distance weighted mean of the per-channel means and stds of the 4 nearest visible tubelets of the
same time step (tube masking keeps the same visible positions at every time step). --stats
original reproduces VideoMAE's picture with the ground-truth statistics (an oracle: it shows the
predicted structure at the true brightness and contrast).

It also prints the reconstruction MSE on the masked tubelets in target space (the pre-training
loss) next to that of predicting the per-tubelet mean, i.e. zeros in target space.

Examples:
  python -m tools.visualize_reconstruction --checkpoint pretrain/checkpoint-99.pth clip.mp4 --out rec.png
  python -m tools.visualize_reconstruction --checkpoint ckpt.pth frames_dir/ --mask_ratio 0.75 --seed 3 \\
      --face_box --stats original --out rec_oracle.png --scale 2
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw

from datasets import transforms as T
from datasets.inference import ClipSpec
from datasets.masking import TubeMaskGenerator
from datasets.registry import sampling_rate_of
from datasets.sampling import clip_span, short_video_indices, segment_windows, window_at
from datasets.video_io import BACKENDS, DEFAULT_BACKEND, read_clips
from engine.cli import HelpFormatter, UserError, run_entry
from engine.options import add_model_options, typed_options
from engine.runtime import pick_device
from engine.pretrain import reconstruction_target
from models import model_from_checkpoint

ROWS = ("original", "masked input", "reconstruction")
LABEL_W = 110  # left column holding the row names
PAD = 2        # gutter between tiles, and around the grid
GREY = 0.5
NEIGHBOURS = 4


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--checkpoint", required=True, help="pre-training checkpoint (run_pretrain.py output)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--mask_ratio", type=float, default=0.9, help="fraction of the spatial positions masked")
    p.add_argument("--seed", type=int, default=0, help="seed of the tube mask")
    p.add_argument("--start", type=int, default=None, help="first frame of the clip (default: centre clip)")
    p.add_argument("--face_box", action="store_true", help="take the fixed upper-centre face box first")
    p.add_argument("--stats", default="visible", choices=["visible", "original"],
                   help="statistics that un-normalise the masked tubelets (see above)")
    p.add_argument("--scale", type=int, default=1, help="enlarge every tile this many times (nearest)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS, help="video decoder")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_model_options(p).add_argument("--decoder_depth", type=int, default=None, help="decoder blocks")
    return p


def read_clip(path, num_frames, rate, start=None, backend=DEFAULT_BACKEND):
    """uint8 ``(T, H, W, 3)``: the centre clip, or the one starting at ``start``."""
    def choose(n):
        if start is None:
            return segment_windows(n, num_frames, rate, 1)
        if start < 0 or start + clip_span(num_frames, rate) > n:
            if n < clip_span(num_frames, rate):
                return [short_video_indices(n, num_frames, rate)]
            raise UserError(f"--start {start}: a clip of {num_frames} frames every {rate} does not fit in {n} frames")
        return [window_at(start, num_frames, rate)]
    if not os.path.exists(path):
        raise UserError(f"no such video or frame folder: {path}")
    return read_clips(path, choose, backend)[0]


def tube_mask(model, ratio, seed):
    t, h, w = model.encoder.grid_size
    if not 0 < ratio < 1:
        raise UserError("--mask_ratio must be between 0 and 1")
    gen = TubeMaskGenerator((t, h, w), ratio)
    if gen.masked_per_frame == 0:
        raise UserError(f"--mask_ratio {ratio} masks nothing of {h * w} positions")
    return torch.from_numpy(gen(np.random.default_rng(seed)))


def _tubelets(clip01, patch, tubelet):
    return rearrange(clip01, "c (t p0) (h p1) (w p2) -> (t h w) (p0 p1 p2) c", p0=tubelet, p1=patch, p2=patch)


def visible_statistics(mean, std, mask, grid):
    """Estimates of each masked tubelet's per-channel mean and std from the visible tubelets only.

    ``mean``/``std``: ``(N, 3)`` per-tubelet statistics (only the visible rows are read); the
    estimate for a masked tubelet is the inverse-distance weighted average over the
    ``NEIGHBOURS`` nearest visible positions at the same time step.
    """
    t, h, w = grid
    s = h * w
    frame_mask = mask.view(t, s)[0]
    vis_pos = torch.nonzero(~frame_mask).squeeze(1)
    msk_pos = torch.nonzero(frame_mask).squeeze(1)
    yx = torch.stack([torch.arange(s) // w, torch.arange(s) % w], 1).float()
    dist = torch.cdist(yx[msk_pos], yx[vis_pos])                      # (S_masked, S_visible)
    k = min(NEIGHBOURS, len(vis_pos))
    d, nearest = dist.topk(k, largest=False)
    weight = 1.0 / d
    weight = weight / weight.sum(1, keepdim=True)                     # (S_masked, k)
    mean_t, std_t = mean.view(t, s, 3), std.view(t, s, 3)
    src = vis_pos[nearest]                                            # (S_masked, k) positions
    est_mean = (mean_t[:, src] * weight[None, ..., None]).sum(2)      # (t, S_masked, 3)
    est_std = (std_t[:, src] * weight[None, ..., None]).sum(2)
    return est_mean.reshape(-1, 3), est_std.reshape(-1, 3)            # masked tubelets, token order


@torch.no_grad()
def reconstruct(model, clip, mask, stats="visible"):
    """Reconstruct one normalised clip ``(3, T, H, W)`` under ``mask`` ``(N,)``.

    Returns a dict: ``original``, ``masked``, ``reconstruction`` as ``(T, H, W, 3)`` floats in
    [0, 1], and ``mse`` / ``mean_mse``: the MSE on the masked tubelets in target space of the
    prediction and of predicting the per-tubelet mean (zeros).
    """
    patch, tubelet = model.patch_size, model.tubelet_size
    x, m = clip[None].float(), mask[None].bool()
    device = next(model.parameters()).device
    pred = model(x.to(device), m).float().cpu()[0]                     # (N_masked, P * 3)
    target = reconstruction_target(x, m, patch, tubelet, True)[0]
    mse = torch.mean((pred - target) ** 2).item()
    mean_mse = torch.mean(target ** 2).item()

    clip01 = T.denormalize(clip.float()).clamp(0, 1)
    tubes = _tubelets(clip01, patch, tubelet)                          # (N, P, 3)
    mean, std = tubes.mean(1), tubes.var(1, unbiased=True).sqrt()      # as the target normalises
    grid = model.encoder.grid_size
    if stats == "visible":
        mu, sigma = visible_statistics(mean, std, mask, grid)
    elif stats == "original":
        mu, sigma = mean[mask], std[mask]
    else:
        raise ValueError(f"stats must be visible or original, not {stats!r}")
    rec = tubes.clone()
    pred = pred.view(pred.shape[0], -1, 3)
    rec[mask] = (pred * (sigma[:, None] + 1e-6) + mu[:, None]).clamp(0, 1)
    masked = tubes.clone()
    masked[mask] = GREY
    t, h, w = grid
    back = lambda z: rearrange(z, "(t h w) (p0 p1 p2) c -> (t p0) (h p1) (w p2) c", t=t, h=h, w=w,  # noqa: E731
                               p0=tubelet, p1=patch, p2=patch).numpy()
    return {"original": back(tubes), "masked": back(masked), "reconstruction": back(rec), "mse": mse,
            "mean_mse": mean_mse}


def grid_size(num_frames, side, scale=1):
    """(width, height) of the PNG for ``num_frames`` columns of ``side``-pixel tiles."""
    tile = side * scale
    return LABEL_W + num_frames * (tile + PAD) + PAD, len(ROWS) * (tile + PAD) + PAD


def render_grid(rows, scale=1):
    """rows: ``(T, H, W, 3)`` arrays in [0, 1], one per entry of ROWS → a Pillow image."""
    t, h, w, _ = rows[0].shape
    width, height = grid_size(t, h, scale)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, (label, frames) in enumerate(zip(ROWS, rows)):
        y = PAD + r * (h * scale + PAD)
        draw.text((4, y + h * scale // 2 - 6), label, fill=(0, 0, 0))
        for f in range(t):
            tile = Image.fromarray((np.clip(frames[f], 0, 1) * 255 + 0.5).astype(np.uint8))
            if scale > 1:
                tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            img.paste(tile, (LABEL_W + PAD + f * (w * scale + PAD), y))
    return img


def run(argv=None):
    args = get_parser().parse_args(argv)
    if args.scale < 1:
        raise UserError("--scale must be at least 1")
    model, cfg = model_from_checkpoint(args.checkpoint, typed_options(args), args.force_config, kind="pretrain")
    model.to(pick_device(args.device))
    embed = model.encoder.patch_embed
    rate = sampling_rate_of(cfg)
    frames = read_clip(args.video, embed.num_frames, rate, args.start, args.backend)
    # Pre-training crops frames and never squashes them: keep their aspect here too.
    clip = ClipSpec(embed.img_size[0], cfg.get("short_side_size"), args.face_box, "keep_aspect")(frames)
    mask = tube_mask(model, args.mask_ratio, args.seed)
    out = reconstruct(model, clip, mask, args.stats)
    img = render_grid([out[k] for k in ("original", "masked", "reconstruction")], args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    img.save(args.out)
    print(f"{args.out}: {img.width}x{img.height}, {int(mask.sum())} of {mask.numel()} tubelets masked "
          f"(seed {args.seed}), un-normalised with {args.stats} statistics")
    print(f"masked-tubelet MSE in target space: reconstruction {out['mse']:.4f}, "
          f"predicting the mean {out['mean_mse']:.4f}")
    return 0


def main(argv=None):
    """Exit status: 0 written, 2 a usage or checkpoint error (message on stderr)."""
    return run_entry(run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""One pre-training epoch: masked tubelet reconstruction with per-tubelet normalised targets."""
import torch
import torch.nn.functional as F
from einops import rearrange

from datasets import transforms as T
from models.pretrain import split_visible

from .device_batch import to_device
from .runtime import autocast


def reconstruction_target(videos, mask, patch_size, tubelet_size, normalize=True, masked_index=None,
                          num_masked=None):
    """Masked tubelets of the clips' pixels in [0, 1], ``(B, N_masked, tubelet * patch^2 * 3)``.

    ``videos``: uint8 frames ``(B, T, H, W, 3)`` (what the loader delivers), or the model's
    normalised float clips ``(B, 3, T, H, W)`` (un-normalised first). With ``normalize``, each
    tubelet's pixels are standardised per channel with their own mean and unbiased std, flattened
    in (t, h, w, c) order as in VideoMAE. Tokens come in increasing index order, as the model's
    reconstruction does; ``num_masked`` (masked tokens per clip) spares reading the count from the mask.
    """
    uint8 = videos.dtype == torch.uint8
    frames = videos if uint8 else T.denormalize(videos.float()).movedim(1, -1)  # (B, T, H, W, 3)
    if masked_index is None:
        masked_index = split_visible(mask, frames.shape[1] // tubelet_size, videos.device, num_masked)[1]
    # Channels before pixels: the statistics reduce over contiguous memory. Masked tubelets only,
    # gathered while still uint8 (a quarter of the bytes to move).
    tubelets = rearrange(frames, "b (t p0) (h p1) (w p2) c -> b (t h w) c (p0 p1 p2)", p0=tubelet_size,
                         p1=patch_size, p2=patch_size)
    x = torch.gather(tubelets, 1, masked_index[..., None, None].expand(-1, -1, *tubelets.shape[2:]))
    x = x.float() / 255 if uint8 else x
    if normalize:
        x = (x - x.mean(dim=-1, keepdim=True)) / (x.var(dim=-1, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return rearrange(x, "b n c p -> b n (p c)")


def reconstruction_loss(model, device, amp, normalize_target=True, num_masked=None):
    """``compute_loss(batch)`` for :func:`engine.train_step.train_epoch`: uint8 frames, masks, indices.

    ``num_masked``, the masked tokens per clip (``TubeMaskGenerator.num_masked``), keeps the
    shapes static for ``torch.compile`` and spares reading the masks; without it each batch's
    count is read from its mask while that is still on the host (no device sync).
    """
    unwrapped = getattr(model, "module", model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
    tubelet, patch = unwrapped.encoder.patch_embed.proj.kernel_size[:2]

    def compute_loss(batch):
        frames = to_device(batch[0], device)
        count = num_masked if num_masked is not None else int(batch[1][0].sum())
        mask = to_device(batch[1].flatten(1).bool(), device)
        with torch.no_grad():
            target = reconstruction_target(frames, mask, patch, tubelet, normalize_target, num_masked=count)
        with autocast(device, amp):
            outputs = model(T.normalize(frames), mask, num_masked=count)
        return F.mse_loss(outputs.float(), target)
    return compute_loss

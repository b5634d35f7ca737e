"""One pre-training epoch: masked tubelet reconstruction with per-tubelet normalised targets."""
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from models.pretrain import split_visible

from .runtime import autocast


def reconstruction_target(videos, mask, patch_size, tubelet_size, normalize=True, masked_index=None):
    """Masked tubelets of the un-normalised clip, ``(B, N_masked, tubelet * patch^2 * 3)``.

    With ``normalize``, each tubelet's pixels are standardised per channel with their own mean and
    unbiased std, flattened in (t, h, w, c) order as in VideoMAE. Tokens come in increasing index
    order, as the model's reconstruction does.
    """
    mean = torch.as_tensor(IMAGENET_DEFAULT_MEAN, device=videos.device).view(1, 3, 1, 1, 1)
    std = torch.as_tensor(IMAGENET_DEFAULT_STD, device=videos.device).view(1, 3, 1, 1, 1)
    x = videos.float() * std + mean
    x = rearrange(x, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet_size, p1=patch_size,
                  p2=patch_size)
    if normalize:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    x = rearrange(x, "b n p c -> b n (p c)")
    if masked_index is None:
        t = videos.shape[2] // tubelet_size
        masked_index = split_visible(mask, t, videos.device)[1]
    return torch.gather(x, 1, masked_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def reconstruction_loss(model, device, amp, normalize_target=True):
    """``compute_loss(batch)`` for :func:`engine.train_step.train_epoch`: clips, masks, indices."""
    unwrapped = getattr(model, "module", model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
    tubelet, patch = unwrapped.encoder.patch_embed.proj.kernel_size[:2]

    def compute_loss(batch):
        videos = batch[0].to(device, non_blocking=True)
        mask = batch[1].flatten(1).bool()  # stays on the CPU: reading its token count costs no device sync
        with torch.no_grad():
            target = reconstruction_target(videos, mask, patch, tubelet, normalize_target)
        with autocast(device, amp):
            outputs = model(videos, mask)
        return F.mse_loss(outputs.float(), target)
    return compute_loss

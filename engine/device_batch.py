"""The float work of a batch, done where the model runs, after one copy of uint8 clips (the pattern
of timm's PrefetchLoader).

Workers deliver uint8 frames ``(B, T, H, W, 3)`` (pinned on CUDA runs: a quarter of the bytes of
float32 clips to collate, share and copy, in the memory order the workers hold them); the move to
the model's ``(B, 3, T, H, W)``, normalisation, random erasing (training) and the pre-training
targets run here, batched, on the device. The model sees the same normalised float32 clips as when
the workers built them.
"""
import torch

from datasets import transforms as T


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A loader tensor on ``device``, asynchronously when it comes from pinned memory."""
    return tensor.to(device, non_blocking=True)


class ModelInput:
    """uint8 frames already on the device → the model's normalised float32 clips, each randomly erased
    (one box for all its frames) with probability ``reprob`` when that is above 0 (training)."""

    def __init__(self, device, reprob: float = 0.0, remode: str = "pixel", recount: int = 1):
        self.erase = T.ClipRandomErasing(reprob, remode, recount, device=device) if reprob > 0 else None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        clips = T.normalize(frames)
        return self.erase(clips) if self.erase is not None else clips


def training_input(args, device) -> ModelInput:
    """The fine-tuning recipe's input: normalised, erased by ``--reprob/--remode/--recount``."""
    return ModelInput(device, args.reprob, args.remode, args.recount)

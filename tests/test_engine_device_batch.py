"""The device-side batch path (uint8 clips from the workers, float work where the model runs) gives
the clips, reconstruction targets and random erasing that the host path gave on the same frames."""
import random

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401
from datasets.masking import TubeMaskGenerator
from datasets.transforms import ClipRandomErasing, to_frames, to_model_input
from engine.device_batch import ModelInput, to_device
from engine.pretrain import reconstruction_loss, reconstruction_target

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="no CUDA device here"))]


def frame_clips(batch=3, frames=8, side=32, seed=0):
    """uint8 clips `(T, 3, H, W)` as the augmentations leave them (channels-last strides)."""
    rng = np.random.default_rng(seed)
    arrays = rng.integers(0, 256, (batch, frames, side, side, 3), dtype=np.uint8)
    return [torch.from_numpy(a).permute(0, 3, 1, 2) for a in arrays]


def tube_masks(batch, grid=(4, 2, 2), ratio=0.75, seed=0):
    generate = TubeMaskGenerator(grid, ratio)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([generate(rng) for _ in range(batch)])), generate.num_masked


@pytest.mark.parametrize("device", DEVICES)
def test_device_path_gives_the_host_paths_clips_and_targets(device):
    clips = frame_clips()
    host = torch.stack([to_model_input(c) for c in clips])                # the workers' float clips
    frames = to_device(torch.stack([to_frames(c) for c in clips]), device)  # what the workers deliver now
    assert frames.dtype == torch.uint8 and frames.shape == (3, 8, 32, 32, 3)
    ours = ModelInput(device)(frames).cpu()
    assert ours.shape == host.shape
    assert ours.dtype == torch.float32 and ours.is_contiguous()
    if device == "cpu":
        assert torch.equal(ours, host)  # the same affine in the same float32 arithmetic
    else:
        torch.testing.assert_close(ours, host, rtol=0, atol=1e-6)

    mask, count = tube_masks(len(clips))
    for normalize in (False, True):
        want = reconstruction_target(host, mask, 16, 2, normalize)         # un-normalises the float clips
        got = reconstruction_target(frames, mask.to(device), 16, 2, normalize, num_masked=count).cpu()
        assert got.shape == want.shape == (3, count, 2 * 16 * 16 * 3)
        # Pixels / 255 against pixels recovered from normalised floats: float32 rounding only,
        # amplified by 1 / (tubelet std) where the target is standardised.
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 if normalize else 1e-6)


def test_a_constant_tubelet_has_a_zero_target():
    """From uint8 the pixels are exact: a flat tubelet standardises to exactly 0 (from normalised
    floats, rounding noise divided by ~1e-6 could reach ~0.01)."""
    frames = torch.full((1, 2, 16, 16, 3), 77, dtype=torch.uint8)
    target = reconstruction_target(frames, torch.tensor([[True]]), 16, 2, True, num_masked=1)
    assert torch.equal(target, torch.zeros_like(target))


def test_pretraining_loss_from_uint8_equals_the_loss_from_host_floats():
    torch.manual_seed(0)
    model = timm.create_model("pretrain_svfap_tiny_patch16_160", img_size=32, num_frames=8, stage_depths=(1, 1, 1),
                              decoder_depth=1)
    clips = frame_clips(batch=2)
    mask, count = tube_masks(2)
    host = torch.stack([to_model_input(c) for c in clips])
    with torch.no_grad():
        want = F.mse_loss(model(host, mask), reconstruction_target(host, mask, 16, 2))
        batch = (torch.stack([to_frames(c) for c in clips]), mask, torch.arange(2))
        got = reconstruction_loss(model, "cpu", None, num_masked=count)(batch)
        unknown_count = reconstruction_loss(model, "cpu", None)(batch)  # read from the host mask
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert torch.equal(got, unknown_count)


def erased_boxes(clips):
    """Per clip of a batch of zeros after erasing: the (T, H, W) map of erased positions."""
    return (clips != 0).any(dim=1)


def test_batched_erasing_is_the_per_clip_erasing():
    """On the same seeds the batch is erased exactly as the workers erased clip after clip."""
    erase = ClipRandomErasing(0.5, "pixel")
    random.seed(3), torch.manual_seed(3)
    batch = erase(torch.zeros(6, 3, 4, 24, 24))
    random.seed(3), torch.manual_seed(3)
    one_by_one = torch.stack([erase(torch.zeros(3, 4, 24, 24)) for _ in range(6)])
    assert torch.equal(batch, one_by_one)


def test_erasing_keeps_its_semantics_on_batches():
    """Probability per clip, one box shared by every frame and channel, fresh normal noise per
    frame and channel (pixel mode), zeros in const mode."""
    random.seed(0), torch.manual_seed(0)
    n, p = 400, 0.25
    clips = ModelInput("cpu", reprob=p)(torch.full((n, 4, 24, 24, 3), 124, dtype=torch.uint8))
    background = to_model_input(torch.full((4, 3, 24, 24), 124, dtype=torch.uint8))
    boxes = (clips != background).any(dim=1)           # (n, T, H, W)
    erased = boxes.flatten(1).any(dim=1)
    assert abs(int(erased.sum()) - n * p) < 4 * (n * p * (1 - p)) ** 0.5  # binomial: within 4 sigma
    for k in torch.nonzero(erased).flatten().tolist():
        box = boxes[k]
        assert all(torch.equal(box[0], box[t]) for t in range(1, 4))  # one box for all frames
        rows, cols = box[0].any(dim=1), box[0].any(dim=0)
        assert int(box[0].sum()) == int(rows.sum()) * int(cols.sum())  # a rectangle
    ks = torch.nonzero(erased).flatten().tolist()
    values = torch.cat([clips[k][:, boxes[k]] for k in ks], dim=1)
    assert abs(float(values.mean())) < 0.1 and abs(float(values.std()) - 1) < 0.1   # N(0, 1) pixels
    inside = clips[ks[0]][:, :, boxes[ks[0]][0]]                    # (3, T, box pixels)
    assert not torch.equal(inside[:, 0], inside[:, 1]) and not torch.equal(inside[0], inside[1])  # per frame, channel
    const = ClipRandomErasing(1.0, "const")(torch.ones(2, 3, 4, 24, 24))
    assert (const == 0).any() and all(torch.equal(const[k, 0, 0] == 0, const[k, 2, 3] == 0) for k in range(2))

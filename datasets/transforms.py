"""Clip-level augmentations: every frame of a clip gets the same crop, flip,
RandAugment ops and erasing box, so the only change between frames is the
motion in the video itself.

Clips travel frame-first, `(T, 3, H, W)`, as uint8 through every augmentation and leave the
datasets as uint8 frames `(T, H, W, 3)` (`to_frames`, the memory order decoding and the
augmentations leave them in, so collating them is a plain copy): the float work runs batched
where the model runs (engine/device_batch.py). `normalize` is the one home of the ImageNet
normalisation and of the move to the model's layout `(3, T, H, W)`, for a batch on the device as
for a single clip on the host (`to_model_input`); random erasing, which works on normalised
values, comes after it. Geometry is one resize or `resized_crop` per clip (one interpolation for
all frames); RandAugment's ops come from timm.

Every step is the release's (docs/recipes.md); where it used PIL the faster equivalents here
differ by the measured pixel amounts docs/recipes.md states (`python -m tools.benchmark.fidelity`).
"""
from __future__ import annotations

import copy
import functools
import math
import random

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing

from .face_box import FACE_BOX_224, RECROPPED_SIZE, face_box  # noqa: F401  (T.face_box, the pipeline's)

# Augmentation runs in DataLoader workers, which are the parallelism: OpenCV's own thread pool
# would oversubscribe the cores, and its threads make forking the process unsafe.
cv2.setNumThreads(1)

_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1, 1)
_STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1, 1)



def to_clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` array -> uint8 `(T, 3, H, W)` tensor (no copy)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


_SCALE = 1.0 / (255.0 * _STD)
_SHIFT = -_MEAN / _STD


@functools.lru_cache(maxsize=None)
def _constants(device: torch.device, name: str) -> torch.Tensor:
    """The (3, 1, 1, 1) normalisation constants on `device`, copied there once."""
    return {"scale": _SCALE, "shift": _SHIFT, "mean": _MEAN, "std": _STD}[name].to(device)


def to_frames(clip: torch.Tensor) -> torch.Tensor:
    """uint8 `(T, 3, H, W)` -> `(T, H, W, 3)`, a view: what a dataset item holds. Decoding and the
    augmentations leave clips in this memory order; stacking them in the model's `(3, T, H, W)`
    instead would be a strided gather, slower than collation's plain copy (docs/speed.md)."""
    return clip.permute(0, 2, 3, 1)


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames `(..., T, H, W, 3)` of any strides, on any device -> the model's clips
    `(..., 3, T, H, W)`: ImageNet-normalised ((x / 255 - mean) / std per channel) contiguous float32.

    The float conversion writes the model layout directly and the normalisation is one in-place
    affine: separate normalise / permute / contiguous passes would each walk the clip again."""
    x = frames.movedim(-1, -4).to(torch.float32, memory_format=torch.contiguous_format)
    return x.mul_(_constants(x.device, "scale")).add_(_constants(x.device, "shift"))


def to_model_input(clip: torch.Tensor) -> torch.Tensor:
    """uint8 `(T, 3, H, W)`, any strides -> normalised contiguous float32 `(3, T, H, W)` (one clip,
    on the host: the tools' path)."""
    return normalize(to_frames(clip))


def denormalize(clip: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`: `(..., 3, T, H, W)` clips with values in [0, 1]."""
    return clip * _constants(clip.device, "std") + _constants(clip.device, "mean")


def resized_crop(clip, top, left, height, width, size, antialias=True) -> torch.Tensor:
    return TF.resized_crop(clip, top, left, height, width, [size, size],
                           interpolation=TF.InterpolationMode.BILINEAR, antialias=antialias)


class MultiScaleCrop:
    """TSN/VideoMAE multi-scale crop (the release's pre-training crop): side lengths from `scales`
    x the short side, a side within 3 px of `size` taken as `size` (aspect distortion of at most
    `max_distort` scale steps), placed at one of 13 fixed positions (corners, centre, quarter
    points) in steps of a quarter of the free space rounded down, resized to `size`."""

    # (x, y) in quarters of the free space.
    POSITIONS = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
                 (1, 1), (3, 1), (1, 3), (3, 3)]

    def __init__(self, size: int, scales=(1, .875, .75, .66), max_distort: int = 1):
        self.size, self.scales, self.max_distort = size, scales, max_distort

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        base = min(height, width)
        sides = [int(base * s) for s in self.scales]
        sides = [self.size if abs(s - self.size) < 3 else s for s in sides]
        pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides)
                 if abs(i - j) <= self.max_distort]
        h, w = random.choice(pairs)
        qx, qy = random.choice(self.POSITIONS)
        return qy * ((height - h) // 4), qx * ((width - w) // 4), h, w

    def __call__(self, clip: torch.Tensor, box=None) -> torch.Tensor:
        """`box` (top, left, h, w) restricts the crop to a region first, e.g. the face box."""
        top0, left0, h0, w0 = box if box is not None else (0, 0, *clip.shape[-2:])
        top, left, h, w = self.params(h0, w0)
        return resized_crop(clip, top0 + top, left0 + left, h, w, self.size)


# The release's aspect range of the random resized crop, as it wrote it.
CROP_RATIO = (0.75, 1.3333)


def random_resized_box(height: int, width: int, scale=(0.08, 1.0), ratio=CROP_RATIO,
                       rng=random) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style crop, drawn as the release draws it: up to 10 tries
    of an area fraction in `scale` and a log-uniform aspect in `ratio`, else the largest centred
    box of an aspect in `ratio`. (torchvision's draw is the same in float32, from torch's RNG.)"""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(clip: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=CROP_RATIO) -> torch.Tensor:
    """The release's training crop: bilinear without antialiasing (its `F.interpolate`)."""
    top, left, h, w = random_resized_box(*clip.shape[-2:], scale, ratio)
    return resized_crop(clip, top, left, h, w, size, antialias=False)


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror a uint8 `(T, 3, H, W)` clip left-right: OpenCV on the frames stacked into one
    channels-last image (cheaper than `Tensor.flip` on a channels-last clip: docs/speed.md)."""
    t, c, h, w = clip.shape
    frames = np.ascontiguousarray(clip.permute(0, 2, 3, 1).numpy()).reshape(t * h, w, c)
    return torch.from_numpy(cv2.flip(frames, 1).reshape(t, h, w, c)).permute(0, 3, 1, 2)


# How frames are resized before any crop: `square`, the release's, to short_side x short_side (a
# squash when the frame is not square); `keep_aspect`, the short side to short_side.
FRAME_RESIZES = ("square", "keep_aspect")


def resize_frames(clip: torch.Tensor, short_side: int, mode: str = "square") -> torch.Tensor:
    """Bilinear and antialiased, as PIL's resize that the release used; unchanged when the frames
    already have the size."""
    h, w = clip.shape[-2:]
    if mode == "square":
        size = [short_side, short_side]
        if (h, w) == (short_side, short_side):
            return clip
    elif mode == "keep_aspect":
        size = short_side
        if min(h, w) == short_side:
            return clip
    else:
        raise ValueError(f"frame resize must be one of {FRAME_RESIZES}, not {mode!r}")
    return TF.resize(clip, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def crop_offsets(length: int, size: int, count: int) -> list[int]:
    """`count` crop starts along one axis: the release's `int(k * step)`, `step = (length - size) /
    (count - 1)`; a single crop is centred as its validation centre crop (Python's round)."""
    if count == 1:
        return [int(round((length - size) / 2.0))]
    step = 1.0 * (length - size) / (count - 1)
    return [int(k * step) for k in range(count)]


def eval_crop(clip: torch.Tensor, size: int, short_side: int | None = None, crop: int = 0, num_crops: int = 1,
              face: bool = False, resize: str = "square") -> torch.Tensor:
    """How validation and testing see a uint8 `(T, 3, H, W)` clip: resized (`resize`, to
    `short_side`, default `size`), crop `crop` of `num_crops` placed along both axes (the centre
    for one); uint8 `(T, 3, size, size)`. `face` first takes the fixed face box of pre-training
    (for 224x224 face tracks)."""
    if face:
        top, left, h, w = face_box(*clip.shape[-2:])
        clip = clip[..., top:top + h, left:left + w]
    clip = resize_frames(clip, short_side or size, resize)
    h, w = clip.shape[-2:]
    top, left = crop_offsets(h, size, num_crops)[crop], crop_offsets(w, size, num_crops)[crop]
    return clip[..., top:top + size, left:left + size]


def eval_view(clip: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """`eval_crop` normalised: the model's float32 `(3, T, size, size)` (the tools' clips)."""
    return to_model_input(eval_crop(clip, *args, **kwargs))


def _affine_coefficients(name: str, args: tuple, height: int, width: int):
    """PIL's inverse affine (a, b, c, d, e, f) of a timm geometric op: output pixel (x, y)
    samples the input at (a x + b y + c, d x + e y + f)."""
    if name == "Rotate":
        angle = -math.radians(args[0])
        a, b, d, e = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
        cx, cy = width / 2.0, height / 2.0  # PIL rotates about the image centre
        return a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy
    if name == "ShearX":
        return 1.0, args[0], 0.0, 0.0, 1.0, 0.0
    if name == "ShearY":
        return 1.0, 0.0, 0.0, args[0], 1.0, 0.0
    if name == "TranslateXRel":
        return 1.0, 0.0, args[0] * width, 0.0, 1.0, 0.0
    if name == "TranslateYRel":
        return 1.0, 0.0, 0.0, 0.0, 1.0, args[0] * height
    if name == "TranslateX":
        return 1.0, 0.0, args[0], 0.0, 1.0, 0.0
    if name == "TranslateY":
        return 1.0, 0.0, 0.0, 0.0, 1.0, args[0]
    return None


def warp_frames(frames: np.ndarray, coeffs, fill) -> np.ndarray:
    """One affine warp, the same for every frame of a uint8 `(T, H, W, 3)` array, as PIL's
    `Image.transform` with bicubic resampling does it: pixel centres at +0.5, an output pixel whose
    source point lies outside the frame takes `fill`, one inside reads edge-clamped neighbours.
    OpenCV's bicubic kernel (a = -0.75) stands for PIL's (a = -1): docs/recipes.md gives the
    difference."""
    t, h, w, _ = frames.shape
    a, b, c, d, e, f = coeffs
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    src_x, src_y = a * xs + b * ys + c, d * xs + e * ys + f
    outside = (src_x < 0) | (src_x >= w) | (src_y < 0) | (src_y >= h)
    # OpenCV puts pixel centres at integers: shift PIL's map by half a pixel on both sides.
    matrix = np.array([[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    out = np.empty_like(frames, order="C")
    for frame, dst in zip(frames, out):  # straight into the output: no per-frame arrays to stack
        cv2.warpAffine(np.ascontiguousarray(frame), matrix, (w, h), dst=dst, flags=flags,
                       borderMode=cv2.BORDER_REPLICATE)
    out[:, outside] = fill
    return out


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13  # PIL's ImageFilter.SMOOTH


def sharpen_frames(frames: np.ndarray, factor: float) -> np.ndarray:
    """PIL's ImageEnhance.Sharpness on every frame of a uint8 `(T, H, W, 3)` array: a blend
    with PIL's SMOOTH filter, which leaves the one-pixel border as it is."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        frame = np.ascontiguousarray(frame)
        smooth = frame.copy()
        smooth[1:-1, 1:-1] = cv2.filter2D(frame, -1, _SMOOTH)[1:-1, 1:-1]
        out[i] = cv2.addWeighted(frame, factor, smooth, 1.0 - factor, 0.0)
    return out


_TINY = Image.new("RGB", (1, 1))  # what the recording draw is given: no pixels are touched
# Every pixel value once per channel: a pointwise op applied to it gives the op's lookup table.
_RAMP = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(1, 256, 3))


def _record_args(op, image):
    """Runs timm's draw of `op` (probability, magnitude noise, random sign) without applying it:
    its level arguments, or None when the op is skipped."""
    drawn = []
    recorder = copy.copy(op)
    recorder.aug_fn = lambda img, *args, **kwargs: drawn.append(args) or img
    recorder(image)
    return drawn[0] if drawn else None


class ClipRandAugment:
    """timm RandAugment as the release applies it to a clip: the op sequence and each op's
    magnitude and sign drawn once per clip (by timm's own code), then every frame transformed on
    its own with those values, so AutoContrast, Equalize and Contrast take each frame's statistics.

    Ops that map each pixel value on its own (Invert, Posterize, Solarize, SolarizeAdd, Brightness)
    become a lookup table, read off timm's op applied to a ramp of all 256 values, that OpenCV
    applies to the clip; Color (a per-pixel blend with grey) runs through timm on the frames stacked
    into one tall image; both are exact. The geometric ops and Sharpness (PIL's warps are the
    costly part: docs/speed.md) go through OpenCV with PIL's maps: see `warp_frames` and
    `sharpen_frames`. The other ops run through timm frame by frame.
    """

    POINTWISE = ("Invert", "Posterize", "Solarize", "Brightness")  # Solarize* covers SolarizeAdd

    def __init__(self, config_str: str, input_size: int):
        hparams = dict(translate_const=int(input_size * 0.45),
                       interpolation=Image.BICUBIC)
        self.ra = rand_augment_transform(config_str, hparams)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 `(T, 3, H, W)` in and out."""
        frames = clip.permute(0, 2, 3, 1).numpy()
        # Same draw as timm's RandAugment.__call__, made once per clip.
        ops = np.random.choice(self.ra.ops, self.ra.num_layers,
                               replace=self.ra.choice_weights is None, p=self.ra.choice_weights)
        for op in ops:
            args = _record_args(op, _TINY)
            if args is not None:
                frames = apply_op(op, args, frames)
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def _lookup(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """`lut` (1, 256, 3) read off a ramp, applied to a uint8 `(H, W, 3)` image."""
    if (lut == lut[..., :1]).all():  # one table for all channels: OpenCV's fast path (2x)
        return cv2.LUT(image, np.ascontiguousarray(lut[0, :, 0]))
    return cv2.LUT(image, lut)


def apply_op(op, args: tuple, frames: np.ndarray) -> np.ndarray:
    """timm op `op` with its drawn `args` on every frame of a uint8 `(T, H, W, 3)` array."""
    t, h, w, _ = frames.shape
    name = op.name
    if name.startswith(ClipRandAugment.POINTWISE + ("Color",)):
        tall = np.ascontiguousarray(frames).reshape(t * h, w, 3)
        if name.startswith("Color"):
            return np.array(op.aug_fn(Image.fromarray(tall), *args, **op.kwargs)).reshape(t, h, w, 3)
        return _lookup(tall, np.asarray(op.aug_fn(_RAMP, *args, **op.kwargs))).reshape(t, h, w, 3)
    coeffs = _affine_coefficients(name, args, h, w)
    if coeffs is not None:
        return warp_frames(frames, coeffs, op.kwargs.get("fillcolor", (128, 128, 128)))
    if name.startswith("Sharpness"):
        return sharpen_frames(frames, args[0])
    # AutoContrast, Equalize, Contrast (per-frame statistics) and any op without a batched version.
    return np.stack([np.asarray(op.aug_fn(Image.fromarray(np.ascontiguousarray(f)), *args, **op.kwargs))
                     for f in frames])


class ClipRandomErasing:
    """timm RandomErasing with one box per clip: a clip is seen as a single image of 3*T
    channels. 'pixel' mode draws fresh noise per frame and channel, 'const' writes zeros; 'rand'
    gives each frame and channel its own value. Runs on normalised clips where they are, on
    `device` (the noise is drawn there)."""

    def __init__(self, probability: float, mode: str = "pixel", max_count: int = 1, device="cpu"):
        self.erase = RandomErasing(probability, mode=mode, max_count=max_count, device=device)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """Contiguous float `(3, T, H, W)` clip or `(B, 3, T, H, W)` batch, erased in place and
        returned; each clip of a batch is erased (with the probability) on its own."""
        c, t, h, w = clips.shape[-4:]
        self.erase(clips.view(-1, c * t, h, w))
        return clips

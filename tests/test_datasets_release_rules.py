"""The data pipeline against the release's own rules (github sunlicai/SVFAP, commit 8e386b9), each
written out here as a fact from its code: which frames a clip takes (kinetics.py for fine-tuning
and testing, VideoMAE's loader for pre-training), the crop boxes (kinetics.py, video_transforms.py,
transforms.GroupMultiScaleCrop), the resize, and the order and draws of the training chain.
Grey-level frame folders make frame identity readable back from a clip: frame k has level 10 + 3k."""
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import PretrainDataset, VideoClsDataset
from datasets import transforms as T
from datasets.demo import write_frames
from datasets.sampling import pretrain_indices, segment_windows, train_indices

STRIDES = (1, 4)


def lengths(rate, num_frames=16):
    """Short, exact-length (a clip span, and the training rule's num_frames * rate) and long videos."""
    span = (num_frames - 1) * rate + 1
    return sorted({span // 2, span, num_frames * rate, num_frames * rate + 1, 3 * num_frames * rate + 7})


# -- the release's rules, as facts ----------------------------------------------------------------

def release_train_indices(n, num_frames, rate, end):
    """kinetics.VideoClsDatasetFrame.load_video, mode train/validation, num_segment 1 (``end`` is
    its draw np.random.randint(num_frames * rate, n), used for long videos)."""
    converted_len = int(num_frames * rate)
    if n <= converted_len:
        index = np.linspace(0, n, num=n // rate)
        index = np.concatenate((index, np.ones(num_frames - n // rate) * n))
        return np.clip(index, 0, n - 1).astype(np.int64)
    str_idx = end - converted_len
    index = np.linspace(str_idx, end, num=num_frames)
    return np.clip(index, str_idx, end - 1).astype(np.int64)


def release_test_windows(n, num_frames, rate, segments):
    """kinetics.VideoClsDatasetFrame, mode test: the stride grid padded with its last frame, then
    segment k starts at int(k * temporal_step) grid positions."""
    all_index = [x for x in range(0, n, rate)]
    while len(all_index) < num_frames:
        all_index.append(all_index[-1])
    temporal_step = max(1.0 * (len(all_index) - num_frames) / (segments - 1), 0)
    return [all_index[int(k * temporal_step):int(k * temporal_step) + num_frames] for k in range(segments)]


def release_pretrain_indices(n, num_frames, rate, offset):
    """VideoMAE._sample_train_indices (num_segments 1) and _video_TSN_decord_batch_loader: ``offset``
    is its draw np.random.randint(n - num_frames * rate + 1), zero for shorter videos."""
    skip_length = num_frames * rate
    offset = offset + 1 if n - skip_length + 1 > 0 else 1
    frame_ids = []
    for _ in range(0, skip_length, rate):
        frame_ids.append(offset - 1)
        if offset + rate < n:
            offset += rate
    return frame_ids


def release_multiscale_box(width, height, size, rng, scales=(1, .875, .75, .66), max_distort=1):
    """transforms.GroupMultiScaleCrop._sample_crop_size with fix_crop and more_fix_crop:
    (top, left, h, w)."""
    base_size = min(width, height)
    crop_sizes = [int(base_size * x) for x in scales]
    crop_h = [size if abs(x - size) < 3 else x for x in crop_sizes]
    crop_w = [size if abs(x - size) < 3 else x for x in crop_sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    crop_w, crop_h = rng.choice(pairs)
    w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
    offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step),
               (0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 4 * h_step), (2 * w_step, 0 * h_step),
               (1 * w_step, 1 * h_step), (3 * w_step, 1 * h_step), (1 * w_step, 3 * h_step), (3 * w_step, 3 * h_step)]
    w_offset, h_offset = rng.choice(offsets)
    return h_offset, w_offset, crop_h, crop_w


def release_rrc_box(height, width, rng, scale=(0.08, 1.0), ratio=(0.75, 1.3333)):
    """video_transforms._get_param_spatial_crop (log-scale aspect, no height/width switch)."""
    for _ in range(10):
        target_area = rng.uniform(*scale) * height * width
        aspect_ratio = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    raise AssertionError("the fallback is not reached in these tests")


def release_view_box(height, width, short_side, crop, num_crops):
    """kinetics test crop after the squash to short_side x short_side: rows (the longer or equal
    axis) from int(crop * spatial_step), short_side of them; all columns."""
    spatial_step = 1.0 * (max(height, width) - short_side) / (num_crops - 1)
    return int(crop * spatial_step), 0, short_side, short_side


class Fixed:
    """A numpy-like RNG whose randint returns a given value, checking the range it is asked for."""

    def __init__(self, value, low_high):
        self.value, self.low_high = value, low_high

    def randint(self, *args):
        assert args == self.low_high, args
        return self.value


# -- frame indices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", STRIDES)
def test_training_and_validation_frames_are_the_releases(rate):
    for n in lengths(rate):
        span = 16 * rate
        if n <= span:
            assert train_indices(n, 16, rate).tolist() == release_train_indices(n, 16, rate, None).tolist(), n
            continue
        for end in range(span, n):  # every end frame the release can draw
            ours = train_indices(n, 16, rate, Fixed(end, (span, n)))
            assert ours.tolist() == release_train_indices(n, 16, rate, end).tolist(), (n, end)


@pytest.mark.parametrize("rate", STRIDES)
@pytest.mark.parametrize("segments", [2, 5])
def test_test_windows_are_the_releases(rate, segments):
    for n in lengths(rate):
        ours = [w.tolist() for w in segment_windows(n, 16, rate, segments)]
        assert ours == release_test_windows(n, 16, rate, segments), n
    # The release divides by zero for one segment: the one window here is the centred one.
    grid = list(range(0, 200, rate))
    start = (len(grid) - 16) // 2
    assert segment_windows(200, 16, rate, 1)[0].tolist() == grid[start:start + 16]


@pytest.mark.parametrize("rate", STRIDES)
def test_pretraining_frames_are_the_releases(rate):
    for n in lengths(rate):
        room = n - 16 * rate + 1
        for offset in range(max(room, 1)):
            rng = Fixed(offset, (room,)) if room > 0 else None
            ours = pretrain_indices(n, 16, rate, rng) if rng else pretrain_indices(n, 16, rate)
            assert ours.tolist() == release_pretrain_indices(n, 16, rate, offset), (n, offset)


def grey_clip(n, h, w):
    return np.repeat((10 + 3 * np.arange(n)).astype(np.uint8)[:, None, None, None], h * w * 3,
                     axis=1).reshape(n, h, w, 3)


def frame_ids(frames):
    level = frames.float().mean(dim=(1, 2, 3))
    return ((level - 10) / 3).round().long().tolist()


@pytest.fixture(scope="module")
def grey_videos(tmp_path_factory):
    """Square and non-square frame folders of short, exact-length and long videos (up to 80 frames,
    the most that distinct grey levels allow)."""
    root = tmp_path_factory.mktemp("release_rules")
    videos = {}
    for rate, ns in ((1, (8, 16, 80)), (4, (30, 61, 80))):
        for h, w in ((40, 40), (40, 56)):
            for n in ns:
                folder = root / f"r{rate}_{h}x{w}_{n}"
                write_frames(str(folder), grey_clip(n, h, w), "png")
                videos[rate, (h, w), n] = folder
    return videos


@pytest.mark.parametrize("rate", STRIDES)
@pytest.mark.parametrize("views", [(2, 2), (5, 3)])
def test_every_test_view_takes_the_releases_frames(grey_videos, tmp_path, rate, views):
    """Through the dataset, square and non-square frames: each view's frames are the release's for
    its segment, whatever its crop."""
    segments, crops = views
    chosen = {k: v for k, v in grey_videos.items() if k[0] == rate}
    csv = tmp_path / "test.csv"
    csv.write_text("".join(f"{folder} 0\n" for folder in chosen.values()))
    ds = VideoClsDataset(str(csv), mode="test", input_size=32, num_frames=16, sampling_rate=rate,
                         test_num_segment=segments, test_num_crop=crops)
    for i, ((_, _, n), _) in enumerate(chosen.items()):
        expected = release_test_windows(n, 16, rate, segments)
        for view in range(segments * crops):
            clip, _, video, got_view = ds[i * ds.num_views + view]
            assert (video, got_view) == (i, view)
            assert frame_ids(clip) == expected[view // crops], (n, view)


@pytest.mark.parametrize("rate", STRIDES)
def test_validation_takes_a_training_window(grey_videos, tmp_path, rate):
    chosen = {k: v for k, v in grey_videos.items() if k[0] == rate and k[1] == (40, 56)}
    csv = tmp_path / "val.csv"
    csv.write_text("".join(f"{folder} 0\n" for folder in chosen.values()))
    ds = VideoClsDataset(str(csv), mode="validation", input_size=32, num_frames=16, sampling_rate=rate)
    for i, (_, _, n) in enumerate(chosen):
        for seed in range(3):
            np.random.seed(seed)
            got = frame_ids(ds[i][0])
            end = np.random.RandomState(seed).randint(16 * rate, n) if n > 16 * rate else None
            assert got == release_train_indices(n, 16, rate, end).tolist(), (n, seed)


# -- resize and crop boxes --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def megamind(opencv_data):
    import cv2
    cap = cv2.VideoCapture(str(opencv_data / "Megamind.avi"))
    frames = []
    for _ in range(3):
        ok, frame = cap.read()
        assert ok
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)  # (3, 528, 720, 3)


def pil_resize(frames, width, height):
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


@pytest.mark.parametrize("shape", ["own", "square"])
def test_squash_resize_is_pils_bilinear_resize(megamind, shape):
    """Every frame to short_side x short_side, as the release's PIL resize (a squash at 720x528):
    within one level of PIL (antialiased bilinear in torchvision)."""
    frames = megamind if shape == "own" else pil_resize(megamind, 256, 256)
    ours = T.to_frames(T.resize_frames(T.to_clip_tensor(frames), 160)).numpy().astype(int)
    ref = pil_resize(frames, 160, 160).astype(int)
    assert ours.shape == ref.shape == (3, 160, 160, 3)
    assert np.abs(ours - ref).max() <= 1
    aspect = T.to_frames(T.resize_frames(T.to_clip_tensor(frames), 160, "keep_aspect"))
    assert aspect.shape[1:3] == ((160, 218) if shape == "own" else (160, 160))


@pytest.mark.parametrize("num_crops", [2, 3])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (80, 48)])
def test_test_crops_are_the_releases_boxes(size, num_crops):
    """With short_side = input size (the release's scripts) every crop of the squashed frame is
    the release's box: the whole frame. With the aspect kept (the option), the release's boxes
    along the longer axis."""
    h, w = size
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 3, h, w), dtype=np.uint8))
    squashed = T.resize_frames(frames, 32)
    kept = T.resize_frames(frames, 32, "keep_aspect")
    for crop in range(num_crops):
        top, left, bh, bw = release_view_box(32, 32, 32, crop, num_crops)
        assert torch.equal(T.eval_crop(frames, 32, crop=crop, num_crops=num_crops),
                           squashed[..., top:top + bh, left:left + bw])
        kh, kw = kept.shape[-2:]
        start = int(crop * (1.0 * (max(kh, kw) - 32) / (num_crops - 1)))
        box = kept[..., start:start + 32, :] if kh >= kw else kept[..., :, start:start + 32]
        assert torch.equal(T.eval_crop(frames, 32, crop=crop, num_crops=num_crops, resize="keep_aspect"), box)


def test_validation_centre_crop_is_the_releases():
    """video_transforms.CenterCrop: x1 = int(round((W - w) / 2.)) (Python's rounding to even)."""
    frames = torch.arange(2 * 3 * 41 * 47, dtype=torch.int64).reshape(2, 3, 41, 47).to(torch.uint8)
    for side, size in ((41, 32), (47, 36), (44, 33)):
        resized = T.resize_frames(frames, side)
        y1, x1 = int(round((side - size) / 2.)), int(round((side - size) / 2.))
        assert torch.equal(T.eval_crop(frames, size, short_side=side), resized[..., y1:y1 + size, x1:x1 + size])


@pytest.mark.parametrize("size", [(160, 160), (162, 162), (224, 224), (240, 320), (320, 240)])
def test_multiscale_crop_boxes_are_the_releases(size):
    """Every box of GroupMultiScaleCrop, drawn with the same random state: sides within 3 px of the
    input size snap to it, offsets are q * ((W - w) // 4)."""
    h, w = size
    crop = T.MultiScaleCrop(160)
    boxes = set()
    for seed in range(300):
        random.seed(seed)
        ours = crop.params(h, w)
        assert ours == release_multiscale_box(w, h, 160, random.Random(seed)), seed
        boxes.add(ours)
    assert len(boxes) > 60


def test_random_resized_crop_box_is_the_releases():
    for seed in range(200):
        for h, w in ((32, 32), (48, 80)):
            assert T.random_resized_box(h, w, rng=random.Random(seed)) == release_rrc_box(h, w, random.Random(seed))


# -- the training chain: order and draws -------------------------------------------------------------

def release_augment(frames, input_size, aa, seed):
    """kinetics.VideoClsDatasetFrame._aug_frame on frames already squashed to short_side: RandAugment
    on the PIL frames (ops drawn with np.random, each op's probability, magnitude and sign with
    random, once for the whole list), then the random resized crop on floats (F.interpolate,
    bilinear, no antialiasing), then the flip (np.random.uniform() < 0.5)."""
    from timm.data.auto_augment import rand_augment_transform
    np.random.seed(seed)
    random.seed(seed)
    ra = rand_augment_transform(aa, dict(translate_const=int(input_size * 0.45), interpolation=Image.BICUBIC))
    images = [Image.fromarray(f) for f in frames]
    for op in np.random.choice(ra.ops, ra.num_layers, replace=ra.choice_weights is None, p=ra.choice_weights):
        if op.prob < 1.0 and random.random() > op.prob:
            continue
        magnitude = op.magnitude
        if op.magnitude_std > 0:
            magnitude = random.gauss(magnitude, op.magnitude_std)
        magnitude = min(10, max(0, magnitude))
        level_args = op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()
        images = [op.aug_fn(img, *level_args, **op.kwargs) for img in images]
    x = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float()
    i, j, h, w = release_rrc_box(x.shape[2], x.shape[3], random)
    x = torch.nn.functional.interpolate(x[:, :, i:i + h, j:j + w], size=(input_size, input_size), mode="bilinear",
                                        align_corners=False)
    if np.random.uniform() < 0.5:
        x = x.flip(-1)
    return x.permute(0, 2, 3, 1).numpy()


def test_training_chain_is_the_releases_order_and_draws(megamind, tmp_path):
    """The same seeds give the release's clip: squash, RandAugment at that size (per frame), random
    resized crop, flip. What remains is resampling (OpenCV's bicubic for PIL's in the warps, uint8
    rounding of the crop): docs/recipes.md measures it."""
    frames = pil_resize(megamind, 96, 72)
    write_frames(str(tmp_path / "v"), frames, "png")
    (tmp_path / "a.csv").write_text(f"{tmp_path / 'v'} 0\n")
    ds = VideoClsDataset(str(tmp_path / "a.csv"), mode="train", input_size=48, num_frames=3, sampling_rate=1)
    squashed = pil_resize(frames, 48, 48)
    deltas = []
    for seed in range(12):
        np.random.seed(seed)
        random.seed(seed)
        ours = ds._augment(T.resize_frames(T.to_clip_tensor(frames), 48)).numpy().astype(float)
        ref = release_augment(squashed, 48, "rand-m7-n4-mstd0.5-inc1", seed)
        deltas.append(np.abs(ours - ref))
        assert deltas[-1].mean() < 2.5, seed
    assert np.mean([d.mean() for d in deltas]) < 1.0


# -- pre-training clips ------------------------------------------------------------------------------

def test_pretraining_clip_takes_the_releases_frames_and_box(tmp_path):
    """A whole item: the release's start rule and multi-scale box, one draw each."""
    clip = grey_clip(80, 40, 56)
    clip[:, :, :, 1] = np.arange(56, dtype=np.uint8)[None, None, :] * 4  # green encodes the column
    write_frames(str(tmp_path / "v"), clip, "png")
    (tmp_path / "p.csv").write_text(f"{tmp_path / 'v'} 0\n")
    ds = PretrainDataset(str(tmp_path / "p.csv"), input_size=32, num_frames=16, sampling_rate=4, mask_ratio=0.5)
    for seed in range(5):
        np.random.seed(seed)
        random.seed(seed)
        frames = ds[0][0]
        offset = np.random.RandomState(seed).randint(80 - 64 + 1)
        assert frame_ids(frames[..., [0]].expand(-1, -1, -1, 3)) == release_pretrain_indices(80, 16, 4, offset)
        top, left, h, w = release_multiscale_box(56, 40, 32, random.Random(seed))
        expected = T.resized_crop(torch.from_numpy(clip[:1]).permute(0, 3, 1, 2), top, left, h, w, 32)
        assert torch.equal(frames[0, ..., 1], expected[0, 1])

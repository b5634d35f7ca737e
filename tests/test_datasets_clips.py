"""Pre-training and fine-tuning items: shapes, dtypes, which frames are
taken, and that augmentations are identical across the frames of a clip.
Frame folders of PNGs keep pixel values exact, so frame identity is readable
back from the clip: frame k is filled with grey level 10 + 3k."""
import random

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from datasets import (PretrainDataset, TubeMaskGenerator, VideoClsDataset,
                      multiple_samples_collate)
from datasets.demo import write_frames
from datasets.sampling import pretrain_indices, segment_windows, short_video_indices, train_indices
from datasets.transforms import denormalize


def grey_clip(n, h=64, w=64):
    return np.repeat((10 + 3 * np.arange(n)).astype(np.uint8)[:, None, None, None], h * w * 3,
                     axis=1).reshape(n, h, w, 3)


def frame_ids(clip):
    """Frame indices of uint8 frames `(T, H, W, 3)` of grey frames."""
    level = clip.float().mean(dim=(1, 2, 3))
    return ((level - 10) / 3).round().long().tolist()


def make_csv(tmp_path, rows, name="a.csv"):
    csv = tmp_path / name
    csv.write_text("".join(f"{p} {lab}\n" for p, lab in rows))
    return str(csv)


@pytest.fixture(scope="module")
def grey80(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey")
    write_frames(str(root / "v"), grey_clip(80), "png")
    write_frames(str(root / "short"), grey_clip(10), "png")
    write_frames(str(root / "wide"), np.ascontiguousarray(  # horizontal gradient, 48x80
        np.broadcast_to(np.linspace(0, 255, 80).astype(np.uint8)[None, None, :, None], (12, 48, 80, 3))), "png")
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    write_frames(str(root / "static"), np.stack([texture] * 8), "png")
    moving = np.stack([np.roll(texture, 3 * k, axis=1) for k in range(8)])
    write_frames(str(root / "moving"), moving, "png")
    return root


def test_tube_mask_invariants():
    gen = TubeMaskGenerator((8, 10, 10), 0.9)
    mask = gen()
    assert mask.shape == (800,) and mask.dtype == bool
    per_t = mask.reshape(8, 100)
    assert (per_t.sum(1) == 90).all()
    assert (per_t == per_t[0]).all()           # the same positions at every time step
    assert not np.array_equal(gen(), gen())     # a fresh draw each call
    a, b = gen(np.random.default_rng(3)), gen(np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert TubeMaskGenerator((2, 3, 3), 0.75)().reshape(2, 9).sum(1).tolist() == [6, 6]  # int(6.75)


def test_sampling_windows():
    """The release's rules (tests/test_datasets_release_rules.py checks them frame by frame)."""
    rng = np.random.RandomState(0)
    starts, pre_starts = set(), set()
    for _ in range(300):
        ix = train_indices(100, 16, 4, rng)  # a span of 64 frames ending at a random frame
        assert set(np.diff(ix)) <= {4, 5} and 0 <= ix[0] and ix[-1] < 100
        starts.add(int(ix[0]))
        ix = pretrain_indices(100, 16, 4, rng)  # exact stride from a start in [0, n - 64]
        assert (np.diff(ix) == 4).all()
        pre_starts.add(int(ix[0]))
    assert min(starts) == 0 and max(starts) == 100 - 1 - 64
    assert min(pre_starts) == 0 and max(pre_starts) == 100 - 64
    # Short videos: training spreads n // rate frames to the end, padded with the last frame;
    # testing and pre-training take the stride grid from frame 0, padded with the last taken.
    assert train_indices(10, 8, 4).tolist() == [0, 9, 9, 9, 9, 9, 9, 9]
    assert short_video_indices(10, 8, 4).tolist() == [0, 4, 8, 8, 8, 8, 8, 8]
    assert pretrain_indices(10, 8, 4).tolist() == [0, 4, 8, 8, 8, 8, 8, 8]
    w = segment_windows(100, 16, 4, 3)  # 25 grid frames: starts int(k * 4.5) = 0, 4, 9 grid steps
    assert [x[0] for x in w] == [0, 16, 36] and w[-1][-1] == 96
    assert segment_windows(100, 16, 4, 1)[0][0] == 16


def test_pretrain_items(grey80, tmp_path):
    csv = make_csv(tmp_path, [(grey80 / "v", 0), (grey80 / "short", 0)])
    ds = PretrainDataset(csv, input_size=64, mask_ratio=0.9)
    clip, mask, index = ds[0]
    assert index == 0
    assert clip.shape == (16, 64, 64, 3) and clip.dtype == torch.uint8
    assert mask.shape == (8 * 4 * 4,) and mask.dtype == torch.bool
    assert (mask.view(8, 16).sum(1) == int(0.9 * 16)).all()
    ids = frame_ids(clip)
    assert all(b - a == 4 for a, b in zip(ids, ids[1:])) and ids[-1] < 80
    assert frame_ids(ds[1][0]) == [0, 4] + [8] * 14  # short video: the stride grid, the last one repeated
    ds = PretrainDataset(csv, input_size=32, num_frames=8, num_samples=3)
    clips, masks, indices = ds[0]
    assert clips.shape == (3, 8, 32, 32, 3) and masks.shape == (3, 4 * 2 * 2) and indices.tolist() == [0] * 3
    batch = multiple_samples_collate([ds[0], ds[1]])
    assert batch[0].shape == (6, 8, 32, 32, 3) and batch[1].shape == (6, 16)
    assert batch[2].tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("side", [224, 112])
def test_face_crop_keeps_the_upper_centre_box(tmp_path, side):
    frames = np.zeros((4, side, side, 3), np.uint8)
    s = side / 224
    frames[:, : round(160 * s), round(32 * s): round(192 * s)] = 255   # the face box
    write_frames(str(tmp_path / "f"), frames, "png")
    csv = make_csv(tmp_path, [(tmp_path / "f", 0)])
    random.seed(0)
    face = PretrainDataset(csv, input_size=32, num_frames=4, sampling_rate=1, face_crop=True)
    plain = PretrainDataset(csv, input_size=32, num_frames=4, sampling_rate=1)
    for _ in range(5):
        assert (face[0][0] == 255).all()
    assert any((plain[0][0] < 230).any() for _ in range(5))


def test_recropped_frames_are_not_cropped_again(tmp_path):
    """Frames of the face box's size (what preprocess.voxceleb2 --recrop writes) are taken whole."""
    rng = np.random.default_rng(5)
    write_frames(str(tmp_path / "r"), rng.integers(0, 256, (4, 160, 160, 3), dtype=np.uint8), "png")
    csv = make_csv(tmp_path, [(tmp_path / "r", 0)])
    kw = dict(input_size=32, num_frames=4, sampling_rate=1)
    face, plain = PretrainDataset(csv, face_crop=True, **kw), PretrainDataset(csv, **kw)
    for seed in range(5):
        random.seed(seed)
        a = face[0][0]
        random.seed(seed)
        assert torch.equal(a, plain[0][0])


def test_repeated_sampling_reads_once_and_draws_each_clip_on_its_own(grey80, tmp_path):
    """num_samples K: one reading of the video, K clips with their own window, crop and mask."""
    class Counting(PretrainDataset):
        reads = 0

        def _read(self, path, choose):
            Counting.reads += 1
            return super()._read(path, choose)

    csv = make_csv(tmp_path, [(grey80 / "static", 0), (grey80 / "v", 0)])
    ds = Counting(csv, input_size=64, num_frames=4, sampling_rate=1, num_samples=4, mask_ratio=0.5)
    random.seed(0), np.random.seed(0)
    crops, windows = [], []
    for _ in range(3):
        clips, masks, _ = ds[0]          # a still texture: clips differ only by their crops
        crops.append(len({c.numpy().tobytes() for c in clips}))
        assert len({m.numpy().tobytes() for m in masks}) == 4
        clips, _, _ = ds[1]              # grey frames: clips differ only by their windows
        windows.append(len({tuple(frame_ids(c)) for c in clips}))
    assert Counting.reads == 6
    assert max(crops) == 4 and max(windows) == 4 and min(crops) > 1 and min(windows) > 1


def test_finetune_train_items(grey80, tmp_path):
    csv = make_csv(tmp_path, [(grey80 / "v", 3), (grey80 / "moving", 1)])
    ds = VideoClsDataset(csv, mode="train", num_classes=5, input_size=48)
    clip, target, index = ds[1]
    assert clip.shape == (16, 48, 48, 3) and clip.dtype == torch.uint8
    assert target.dtype == torch.int64 and target.dim() == 0 and int(target) == 1 and index == 1
    ds = VideoClsDataset(csv, mode="train", input_size=32, num_frames=8, num_sample=2)
    clips, targets, indices = ds[0]
    assert clips.shape == (2, 8, 32, 32, 3) and targets.tolist() == [3, 3] and indices.tolist() == [0, 0]
    clips, _, _ = ds[1]
    assert not torch.equal(clips[0], clips[1])  # two augmentations of the same (textured) frames
    xb, yb, ib = multiple_samples_collate([ds[0], ds[1]])
    assert xb.shape == (4, 8, 32, 32, 3) and yb.tolist() == [3, 3, 1, 1] and ib.tolist() == [0, 0, 1, 1]

    reg = tmp_path / "reg.csv"
    reg.write_text(f"{grey80 / 'v'} 0.5 -0.25 1\n")
    for mode in ("train", "validation", "test"):
        item = VideoClsDataset(str(reg), mode=mode, num_targets=3, input_size=32, num_frames=8)[0]
        assert item[1].dtype == torch.float32 and item[1].tolist() == [0.5, -0.25, 1.0]


def test_same_augmentation_on_every_frame(grey80, tmp_path):
    csv = make_csv(tmp_path, [(grey80 / "static", 0)])
    ds = VideoClsDataset(csv, mode="train", input_size=48, num_frames=8, sampling_rate=1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    draws = [ds[0][0] for _ in range(8)]
    for clip in draws:   # identical input frames must stay identical after augmentation
        assert all(torch.equal(clip[0], clip[t]) for t in range(1, 8))
    assert len({tuple(c[0].flatten()[:64].tolist()) for c in draws}) == 8  # but vary per draw


def test_validation_is_one_clip_by_the_training_rule(grey80, tmp_path):
    """As the release: a random window of the training rule, one view, the centre crop."""
    csv = make_csv(tmp_path, [(grey80 / "v", 2), (grey80 / "short", 1)])
    ds = VideoClsDataset(csv, mode="validation", input_size=32, num_frames=8, sampling_rate=2)
    assert len(ds) == 2
    np.random.seed(0)
    clip, target, index = ds[0]
    assert frame_ids(clip) == train_indices(80, 8, 2, np.random.RandomState(0)).tolist()
    assert int(target) == 2 and index == 0
    assert len({tuple(frame_ids(ds[0][0])) for _ in range(10)}) > 1
    assert frame_ids(ds[1][0]) == [0, 2, 5, 7, 9, 9, 9, 9]  # linspace(0, 10, 5), padded, clipped


def test_test_views_cover_the_video(grey80, tmp_path):
    csv = make_csv(tmp_path, [(grey80 / "v", 0), (grey80 / "short", 1)])
    ds = VideoClsDataset(csv, mode="test", input_size=32, num_frames=8, sampling_rate=2,
                         test_num_segment=3, test_num_crop=2)
    assert ds.num_views == 6 and len(ds) == 12
    items = [ds[i] for i in range(12)]
    assert [(v, w) for _, _, v, w in items] == [(v, w) for v in (0, 1) for w in range(6)]
    assert [int(t) for _, t, _, _ in items] == [0] * 6 + [1] * 6
    windows = [frame_ids(items[w][0]) for w in range(0, 6, 2)]
    # 40 grid frames (0, 2, ..., 78): windows start int(k * 16) grid steps in
    assert windows == [list(range(s, s + 15, 2)) for s in (0, 32, 64)]
    assert windows[-1][-1] == 78

    single = VideoClsDataset(csv, mode="test", input_size=32, num_frames=8, sampling_rate=2,
                             test_num_segment=1, test_num_crop=1)
    assert len(single) == 2 and frame_ids(single[0][0]) == list(range(32, 47, 2))


def test_test_crops_of_non_square_frames(grey80, tmp_path):
    """Squashed to the input size (the release's), every crop is the whole frame; with the aspect
    kept (--frame_resize keep_aspect), crops move along the longer axis."""
    csv = make_csv(tmp_path, [(grey80 / "wide", 0)])
    kw = dict(mode="test", input_size=48, num_frames=4, sampling_rate=1, test_num_segment=1)
    squashed = VideoClsDataset(csv, test_num_crop=3, **kw)
    crops = [squashed[i][0] for i in range(3)]
    assert all(c.shape == (4, 48, 48, 3) for c in crops)
    assert all(torch.equal(crops[0], c) for c in crops[1:])
    kept = VideoClsDataset(csv, test_num_crop=3, frame_resize="keep_aspect", **kw)
    crops = [kept[i][0] for i in range(3)]
    means = [float(c.float().mean()) for c in crops]
    assert means[0] < means[1] < means[2]     # left, centre, right of a left-to-right gradient
    one = VideoClsDataset(csv, test_num_crop=1, frame_resize="keep_aspect", **kw)
    torch.testing.assert_close(one[0][0], crops[1])


@pytest.mark.parametrize("name,arg", [("Rotate", 17.0), ("ShearX", 0.2), ("ShearY", -0.25),
                                      ("TranslateXRel", 0.3), ("TranslateYRel", -0.2)])
def test_batched_geometric_ops_match_timm(name, arg):
    """The clip-wide OpenCV warp computes timm's PIL op with the release's bicubic resampling on
    every frame: the same map and edge, OpenCV's cubic kernel for PIL's."""
    from PIL import Image
    from timm.data import auto_augment as A

    from datasets.transforms import _affine_coefficients, warp_frames
    fn = {"Rotate": A.rotate, "ShearX": A.shear_x, "ShearY": A.shear_y,
          "TranslateXRel": A.translate_x_rel, "TranslateYRel": A.translate_y_rel}[name]
    rng = np.random.default_rng(0)
    frames = np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
                                  .resize((96, 80), Image.BILINEAR)) for _ in range(3)])
    fill = (128, 128, 128)
    ours = warp_frames(frames, _affine_coefficients(name, (arg,), 80, 96), fill).astype(int)
    ref = np.stack([np.asarray(fn(Image.fromarray(f), arg, fillcolor=fill, resample=Image.BICUBIC))
                    for f in frames]).astype(int)
    diff = np.abs(ours - ref)
    assert diff.mean() < 1.0 and np.quantile(diff, 0.99) <= 3 and diff.max() <= 8


@pytest.mark.parametrize("factor", [0.1, 1.8])
def test_batched_sharpness_matches_pil(factor):
    from PIL import Image, ImageEnhance

    from datasets.transforms import sharpen_frames
    frames = np.random.default_rng(1).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    ref = np.stack([np.asarray(ImageEnhance.Sharpness(Image.fromarray(f)).enhance(factor)) for f in frames])
    assert np.abs(sharpen_frames(frames, factor).astype(int) - ref).max() <= 1


@pytest.mark.parametrize("channels_last", [False, True])
def test_model_input_is_normalised_frames_in_model_layout(channels_last):
    """One-pass conversion = per frame (x / 255 - mean) / std, laid out (3, T, H, W), whatever the
    strides of the uint8 clip (RandAugment hands it over channels-last)."""
    from datasets.transforms import to_model_input
    frames = np.random.default_rng(2).integers(0, 256, (5, 12, 14, 3), dtype=np.uint8)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    if not channels_last:
        clip = clip.contiguous()
    out = to_model_input(clip)
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
    ref = ((torch.from_numpy(frames).float() / 255 - mean) / std).permute(3, 0, 1, 2)
    assert out.shape == (3, 5, 12, 14) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(denormalize(out) * 255, ref.new_tensor(frames).permute(3, 0, 1, 2),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Invert", "PosterizeIncreasing",
                                  "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
                                  "ContrastIncreasing", "BrightnessIncreasing"])
def test_colour_ops_equal_timm_on_every_frame(name):
    """Every colour op of the SVFAP RandAugment gives exactly what timm's op gives on each frame
    (so AutoContrast, Equalize and Contrast take each frame's statistics, as in the release), for
    several drawn magnitudes and signs."""
    from PIL import Image

    from datasets.transforms import ClipRandAugment, _record_args, _TINY, apply_op
    (op,) = [o for o in ClipRandAugment("rand-m7-n4-mstd0.5-inc1", 64).ra.ops if o.name == name]
    op.prob = 1.0
    rng = np.random.default_rng(3)
    # Smooth content with a limited range, so that AutoContrast and Equalize have work to do.
    frames = np.stack([np.asarray(Image.fromarray(rng.integers(40, 200, (6, 8, 3), dtype=np.uint8))
                                  .resize((40, 32), Image.BILINEAR)) for _ in range(4)])
    random.seed(0)
    for _ in range(6):
        args = _record_args(op, _TINY)
        ref = np.stack([np.asarray(op.aug_fn(Image.fromarray(f), *args, **op.kwargs)) for f in frames])
        np.testing.assert_array_equal(apply_op(op, args, frames), ref, err_msg=str(args))


@pytest.mark.parametrize("channels_last", [False, True])
def test_hflip_mirrors_every_frame(channels_last):
    from datasets.transforms import hflip
    frames = np.random.default_rng(4).integers(0, 256, (5, 12, 14, 3), dtype=np.uint8)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    if not channels_last:
        clip = clip.contiguous()
    out = hflip(clip)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    assert torch.equal(out, torch.from_numpy(frames[:, :, ::-1].copy()).permute(0, 3, 1, 2))

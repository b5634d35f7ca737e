"""tools/visualize_reconstruction.py: the PNG grid, visible-only statistics, and a briefly trained
tiny masked autoencoder reconstructing masked tubelets better than the per-tubelet mean."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import models  # noqa: F401
from datasets import read_annotations, read_clips
from datasets.demo import generate
from datasets.masking import TubeMaskGenerator
from datasets.sampling import segment_windows
from engine.checkpoint import save_checkpoint, training_state
from engine.pretrain import reconstruction_target
from tools import visualize_reconstruction as vr

ARCH = dict(img_size=64, num_frames=8, stage_depths=(1, 1, 1), encoder_embed_dim=64, encoder_num_heads=2,
            decoder_embed_dim=64, decoder_num_heads=2, decoder_depth=1)
ARGS = {"model": "pretrain_svfap_tiny_patch16_160", "input_size": 64, "num_frames": 8, "sampling_rate": 2,
        "stage_depths": [1, 1, 1], "embed_dim": 64, "num_heads": 2, "decoder_depth": 1,
        "decoder_embed_dim": 64, "decoder_num_heads": 2}
MASK_RATIO = 0.75  # 12 of the 16 positions of a 64x64 frame


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    generate(str(out), train_per_class=4, eval_per_class=2, frames=24)
    return out


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """A tiny masked autoencoder trained for 150 steps (batch 8) on cached demo clips, about 10 s on one
    core. The clips are cut as the tool cuts them (3 windows per training video, resized, centre crop)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster here
    try:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        clips = torch.stack([vr.ClipSpec(64)(frames)
                             for sample in read_annotations(str(demo / "pretrain.csv"))
                             for frames in read_clips(sample.path, lambda n: segment_windows(n, 8, 2, 3))])
        gen = TubeMaskGenerator((4, 4, 4), MASK_RATIO)
        model = timm.create_model("pretrain_svfap_tiny_patch16_160", **ARCH)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        for step in range(150):
            x = clips[torch.from_numpy(rng.integers(0, len(clips), 8))]
            x = x.flip(-1) if step % 2 else x
            mask = torch.from_numpy(np.stack([gen(rng) for _ in range(8)]))
            loss = torch.nn.functional.mse_loss(model(x, mask), reconstruction_target(x, mask, 16, 2))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("ckpt") / "pretrain.pth"
    save_checkpoint(str(path), training_state(model.eval(), epoch=0, args=ARGS))
    return path, model


def test_png_grid_size_and_rows(trained, demo, tmp_path, capsys):
    ckpt, model = trained
    video = read_annotations(str(demo / "val.csv"))[0].path
    out = tmp_path / "rec.png"
    assert vr.main([video, "--checkpoint", str(ckpt), "--out", str(out), "--mask_ratio", str(MASK_RATIO),
                    "--seed", "1", "--scale", "2"]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    # 8 columns of 128-pixel tiles (64 px x scale 2), 2-pixel gutters, a 110-pixel label column; 3 rows.
    assert img.shape == (3 * 130 + 2, 110 + 8 * 130 + 2, 3)
    # The first row is the clip itself (its first frame, enlarged by 2).
    frames = vr.read_clip(video, 8, 2)
    clip = vr.ClipSpec(64)(frames)
    first = (vr.T.denormalize(clip)[:, 0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    tile = img[2:130:2, 112:240:2]
    assert np.abs(tile.astype(int) - first.astype(int)).max() <= 1
    # The masked row shows grey on the 12 masked positions of each frame.
    masked = img[132:260:2, 112:240:2]
    grey_blocks = sum(np.all(masked[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] == 128)
                      for r in range(4) for c in range(4))
    assert grey_blocks == 12
    text = capsys.readouterr().out
    assert "visible statistics" in text and "predicting the mean" in text


def test_same_mask_for_same_seed(trained):
    _, model = trained
    a, b, c = (vr.tube_mask(model, 0.75, s) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.sum()) == 4 * 12


def test_visible_statistics_never_read_masked_pixels(trained, demo):
    """With --stats visible, changing the masked pixels changes nothing in the picture's
    reconstruction; with the oracle (original) statistics it does."""
    _, model = trained
    frames = vr.read_clip(read_annotations(str(demo / "val.csv"))[1].path, 8, 2)
    clip = vr.ClipSpec(64)(frames)
    mask = vr.tube_mask(model, MASK_RATIO, 0)
    spoiled = clip.clone()
    pos = torch.nonzero(mask.view(4, 16)[0]).squeeze(1)
    for p in pos.tolist():  # overwrite every masked 16x16 block, in every frame, with noise
        r, c = divmod(p, 4)
        spoiled[:, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = torch.randn(3, 8, 16, 16)
    a, b = vr.reconstruct(model, clip, mask, "visible"), vr.reconstruct(model, spoiled, mask, "visible")
    np.testing.assert_allclose(a["reconstruction"], b["reconstruction"], atol=1e-6)
    c, d = vr.reconstruct(model, clip, mask, "original"), vr.reconstruct(model, spoiled, mask, "original")
    assert np.abs(c["reconstruction"] - d["reconstruction"]).max() > 0.1
    # Visible tubelets are copied from the input in both modes.
    vis = ~mask.view(4, 4, 4)[0]
    r, col = [int(v) for v in torch.nonzero(vis)[0]]
    block = (slice(None), slice(r * 16, (r + 1) * 16), slice(col * 16, (col + 1) * 16))
    np.testing.assert_allclose(a["reconstruction"][block], a["original"][block], atol=1e-6)


def test_trained_model_beats_predicting_the_mean(trained, demo):
    """Held-out clips (the val split, unseen in training), three masks each: the masked-tubelet MSE in
    target space is below that of predicting each tubelet's mean (zeros)."""
    _, model = trained
    mse, mean_mse = [], []
    for sample in read_annotations(str(demo / "val.csv")):
        clip = vr.ClipSpec(64)(vr.read_clip(sample.path, 8, 2))
        for seed in range(3):
            out = vr.reconstruct(model, clip, vr.tube_mask(model, MASK_RATIO, seed))
            mse.append(out["mse"])
            mean_mse.append(out["mean_mse"])
    mse, mean_mse = float(np.mean(mse)), float(np.mean(mean_mse))
    print(f"masked-tubelet MSE (target space): model {mse:.4f}, predicting the mean {mean_mse:.4f}")
    assert mse < mean_mse - 0.01


def test_clear_errors(trained, demo, tmp_path, capsys):
    ckpt, _ = trained
    video = read_annotations(str(demo / "val.csv"))[0].path
    assert vr.main([str(tmp_path / "nope.mp4"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "a.png")]) == 2
    assert "no such video" in capsys.readouterr().err
    assert vr.main([video, "--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "a.png")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    fine = timm.create_model("svfap_tiny_patch16_160", img_size=64, all_frames=8, stage_depths=(1, 1, 1),
                             embed_dim=64, num_heads=2, num_classes=6)
    save_checkpoint(str(tmp_path / "fine.pth"), training_state(fine, args={**ARGS, "model": "svfap_tiny_patch16_160"}))
    assert vr.main([video, "--checkpoint", str(tmp_path / "fine.pth"), "--out", str(tmp_path / "a.png")]) == 2
    assert "no decoder" in capsys.readouterr().err
    # A checkpoint/model mismatch is explained, not a stack of state_dict keys.
    assert vr.main([video, "--checkpoint", str(ckpt), "--out", str(tmp_path / "a.png"), "--embed_dim", "96"]) == 2
    assert "--embed_dim 96 (the checkpoint records 64)" in capsys.readouterr().err
    assert vr.main([video, "--checkpoint", str(ckpt), "--out", str(tmp_path / "a.png"), "--embed_dim", "96",
                    "--force_config"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "mismatched" in err
    assert not (tmp_path / "a.png").exists()

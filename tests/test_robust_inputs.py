"""Inputs that used to give silent wrong results or tracebacks: each is now the right behaviour or
one clear error line. A GPU job never trains on the CPU without being asked to."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
from argparse import Namespace
from fractions import Fraction

import av
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import run_finetune
import run_pretrain
from conftest import FT, REPO, TINY
from datasets import check
from datasets.annotations import AnnotationError, read_annotations
from datasets.video_io import _has_decord, find_inputs, read_clips
from engine import runtime
from engine.checkpoint import check_same_run, save_checkpoint, training_state
from engine.cli import UserError
from engine.timelines import write_face_outputs
from models import create_model
from models.tuning import load_model_state
from tools import export, model_info, predict


def in_process(cli, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def data(demo):
    return ["--data_path", demo, "--data_root", demo]


# -- 9: the device ------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable CUDA device")
def test_a_cuda_device_that_is_not_usable_is_an_error_naming_the_cuda_versions(demo, tmp_path):
    assert run_finetune.get_args_parser().parse_args([]).device == "cuda"  # the default asks for the GPU
    argv = [*FT, *data(demo), "--epochs", "1", "--output_dir", tmp_path / "out"]
    argv[argv.index("--device") + 1] = "cuda"
    status, _, err = in_process(run_finetune.cli, argv)
    assert status == 2 and err.startswith("error: --device cuda: CUDA is not available: ")
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    assert built in err and "Use --device cpu" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_an_old_driver_is_named_as_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(runtime, "driver_cuda_version", lambda: "12.4")
    with pytest.raises(UserError, match=r"built for CUDA 13\.0; the NVIDIA driver here supports CUDA up to 12\.4 "
                                        r"\(too old: see docs/cluster\.md"):
        runtime.check_device("cuda:0")
    assert runtime.check_device("cpu") == torch.device("cpu")


def test_the_scripts_ask_for_the_gpu_unless_told_otherwise():
    def dry(**env):
        proc = subprocess.run(["bash", "scripts/dfew/finetune_small.sh"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "DRY_RUN": "1", "NPROC_PER_NODE": "1", **env}, check=True)
        return [line for line in proc.stdout.splitlines() if "run_finetune.py" in line]
    assert all("--device cuda" in line for line in dry())
    assert all("--device cpu" in line for line in dry(DEVICE="cpu"))


# -- 8: values no run can use, and other unclear failures ------------------------------------------

@pytest.mark.parametrize("entry,option,value,message", [
    ("finetune", "--val_freq", "0", "--val_freq must be at least 1, not 0"),
    ("finetune", "--sampling_rate", "-1", "--sampling_rate must be at least 1, not -1"),
    ("finetune", "--lr", "-1", "--lr must be above 0, not -1.0"),
    ("finetune", "--drop_path", "2", "--drop_path must be in [0, 1), not 2.0"),
    ("finetune", "--smoothing", "1.5", "--smoothing must be in [0, 1), not 1.5"),
    ("finetune", "--input_size", "50", "--input_size 50 is not a multiple of the patch size 16"),
    ("pretrain", "--mask_ratio", "0", "--mask_ratio 0.0 masks 0 of the 16 positions"),
    ("pretrain", "--mask_ratio", "1", "--mask_ratio 1.0 masks 16 of the 16 positions"),
    ("pretrain", "--mask_ratio", "1.5", "--mask_ratio 1.5 masks 24 of the 16 positions"),
])
def test_option_values_out_of_range_are_one_error_line_before_any_work(demo, tmp_path, entry, option, value,
                                                                        message):
    if entry == "finetune":
        cli, argv = run_finetune.cli, [*FT, *data(demo), "--epochs", "1"]
    else:
        cli, argv = run_pretrain.cli, ["--model", "pretrain_svfap_tiny_patch16_160", *TINY, "--data_path",
                                       demo / "pretrain.csv", "--epochs", "1"]
    status, _, err = in_process(cli, [*argv, option, value, "--output_dir", tmp_path / "out"])
    assert status == 2 and err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_config_json_with_absurd_sizes_is_refused_before_anything_is_built(tmp_path, capsys):
    folder = tmp_path / "videomae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["VideoMAEModel"], "hidden_size": 1 << 20,
                                                    "num_attention_heads": 16, "image_size": 224 * 64}))
    assert model_info.main(["--checkpoint", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no VideoMAE is that large" in err and len(err.strip().splitlines()) == 1


def test_a_path_with_a_space_is_named_as_such(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("clips/a.mp4 1\nclips/my clip.mp4 3\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:2: the path 'clips/my clip\.mp4' holds a space"):
        read_annotations(csv)
    csv.write_text("clips/my clip.mp4 3\n")  # first line: would have been taken for 2 regression targets
    with pytest.raises(AnnotationError, match="holds a space") as e:
        read_annotations(csv)
    assert "regression" not in str(e.value)


def test_check_full_decodes_every_frame_of_a_frame_folder(tmp_path, capsys):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(np.full((32, 32, 3), i * 20, np.uint8)).save(folder / f"{i:05d}.jpg")
    (folder / "00002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "list.csv").write_text("clip 0\n")
    assert check.main([str(tmp_path / "list.csv")]) == 0  # the first, middle and last frames are fine
    assert check.main([str(tmp_path / "list.csv"), "--full"]) == 1
    assert "00002.jpg: unreadable image" in capsys.readouterr().out


def test_fp16_on_the_cpu_warns_that_it_is_slow(capsys):
    assert runtime.precision("fp16", "cpu") == "fp16"
    assert "WARNING: --amp fp16 on the CPU" in capsys.readouterr().out
    runtime.precision("none", "cpu")
    assert capsys.readouterr().out == ""


def test_a_requeue_where_amp_auto_means_another_precision_resumes(capsys):
    recorded = {"args": {"amp": "bf16", "amp_requested": "auto", "lr": 1e-3}}
    check_same_run("ckpt.pth", recorded, Namespace(amp="none", amp_requested="auto", lr=1e-3))
    assert "--amp auto means none on this machine; the run so far used bf16" in capsys.readouterr().out
    with pytest.raises(UserError, match="--amp: 'fp16' in the checkpoint, 'none' now"):
        check_same_run("ckpt.pth", {"args": {"amp": "fp16", "amp_requested": "fp16"}},
                       Namespace(amp="none", amp_requested="none"))


def test_long_videos_are_decoded_once_with_progress(finetuned, opencv_data, monkeypatch, capsys):
    out, _ = finetuned
    opened = []
    real = predict.open_source
    monkeypatch.setattr(predict, "open_source", lambda *a, **kw: opened.append(real(*a, **kw)) or opened[-1])
    video = opencv_data / "Megamind.avi"  # AVI: decoded front to back, never by seeking
    assert predict.main(["--checkpoint", str(out / "checkpoint-best.pth"), "--device", "cpu", "--max_frames", "32",
                         str(video)]) == 0
    (source,) = opened
    assert source.num_frames == 270 and source.decoded <= source.num_frames  # 5 chunks, one pass
    assert "Megamind.avi: 100%" in capsys.readouterr().err  # the progress bar


# -- 7: silent wrong results ------------------------------------------------------------------------

def rotated_video(path, frames, degrees):
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=Fraction(25))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "threads": "1"}
        if degrees:
            stream.set_display_rotation(degrees)
        for f in frames:
            c.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(stream.encode())


def test_rotated_videos_are_decoded_upright(tmp_path):
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    frames[:, :8, :8] = 255  # a white corner, top left as recorded
    rotated_video(tmp_path / "plain.mp4", frames, 0)
    rotated_video(tmp_path / "phone.mp4", frames, 90)  # the display matrix: 90 degrees counter-clockwise
    (plain,) = read_clips(str(tmp_path / "plain.mp4"), lambda n: [list(range(n))])
    (phone,) = read_clips(str(tmp_path / "phone.mp4"), lambda n: [list(range(n))])
    assert plain.shape == (6, 32, 48, 3) and phone.shape == (6, 48, 32, 3)
    np.testing.assert_array_equal(phone, np.rot90(plain, k=1, axes=(1, 2)))
    assert phone[0, -4:, :4].mean() > 200  # the corner is now bottom left, as a player shows it
    if _has_decord():  # decord turns videos by their display matrix itself: the same frames
        (by_decord,) = read_clips(str(tmp_path / "phone.mp4"), lambda n: [list(range(n))], backend="decord")
        np.testing.assert_array_equal(by_decord, phone)


def test_a_folder_of_videos_with_an_image_is_a_folder_of_videos(demo, finetuned, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    videos = sorted((demo / "videos" / "test").glob("*.mp4"))[:2]
    for v in videos:
        shutil.copy(v, folder)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "poster.jpg")
    assert find_inputs([folder]) == [str(folder / v.name) for v in videos]
    out, _ = finetuned
    assert predict.main(["--checkpoint", str(out / "checkpoint-best.pth"), "--device", "cpu", "--windows", "centre",
                         "--out_json", str(tmp_path / "p.json"), str(folder)]) == 0
    predicted = [r["video"] for r in json.loads((tmp_path / "p.json").read_text())["videos"]]
    assert predicted == [str(folder / v.name) for v in videos]
    err = capsys.readouterr().err
    assert "1 image(s) in" in err and "poster.jpg" in err and "left out" in err


def names_of(finetuned):
    out, _ = finetuned
    return torch.load(out / "checkpoint-best.pth", weights_only=True)["args"]["class_names"]


@pytest.mark.parametrize("change", ["reordered", "duplicated"])
def test_class_names_that_disagree_with_the_checkpoint_are_refused(demo, finetuned, tmp_path, change):
    names = names_of(finetuned)
    assert names == (demo / "classes.txt").read_text().split()
    split = tmp_path / "split"
    split.mkdir()
    shutil.copy(demo / "test.csv", split)
    given = names[::-1] if change == "reordered" else [names[0]] + names[:-1]
    (split / "classes.txt").write_text("\n".join(given) + "\n")
    out, _ = finetuned
    status, _, err = in_process(run_finetune.cli, [*FT, "--data_path", split, "--data_root", demo, "--eval", "True",
                                                   "--finetune", out / "checkpoint-best.pth"])
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert ("in that order" if change == "reordered" else "more than once") in err
    assert predict.main(["--checkpoint", str(out / "checkpoint-best.pth"), "--device", "cpu", "--class_names",
                         ",".join(given), str(demo / "videos" / "test")]) == 2


def test_onnx_export_carries_the_class_names_the_checkpoint_records(tmp_path):
    names = ["mouth_opening", "mouth_closing", "smiling"]
    model = create_model("svfap_tiny_patch16_160", num_classes=3, img_size=32, all_frames=8, stage_depths=(1, 1, 1),
                         embed_dim=64, num_heads=2)
    args = {"model": "svfap_tiny_patch16_160", "input_size": 32, "num_frames": 8, "stage_depths": [1, 1, 1],
            "embed_dim": 64, "num_heads": 2, "data_set": "custom", "nb_classes": 3, "class_names": names}
    save_checkpoint(str(tmp_path / "ckpt.pth"), training_state(model, args=args, epoch=0))
    assert export.main([str(tmp_path / "ckpt.pth"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                        "--verify", "False"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["class_names"]) == names


def test_faces_all_replaces_a_previous_runs_face_files_and_stays_in_out_dir(tmp_path):
    def result(k):
        windows = [{"start_frame": 0, "end_frame": 15, "probs": {"a": 0.6, "b": 0.4}}]
        return {"video": "v.mp4", "fps": 25.0, "num_frames": 32,
                "faces": [{"face": i, "start_frame": 0, "end_frame": 31, "windows": windows, "top": [["a", 0.6]]}
                          for i in range(1, k + 1)]}
    folder = tmp_path / "v"
    write_face_outputs(str(folder), result(3), [None] * 3, ["a", "b"], "classification")
    write_face_outputs(str(folder), result(2), [None] * 2, ["a", "b"], "classification")
    assert sorted(p.name for p in folder.iterdir()) == ["face_1.csv", "face_1.json", "face_1.png", "face_2.csv",
                                                        "face_2.json", "face_2.png", "faces.png"]
    out = tmp_path / "out"
    for name in ("..", ".", "../..", "/"):
        target = predict.face_folder(str(out), name, set())
        assert os.path.dirname(target) == str(out) and os.path.basename(target) not in ("", ".", ".."), name


def test_resuming_from_a_file_without_optimizer_state_is_refused(demo, pretrained, finetuned, tmp_path):
    out, _ = finetuned
    argv = [*FT, *data(demo), "--epochs", "1", "--finetune", pretrained, "--resume", out / "checkpoint-best.pth",
            "--output_dir", tmp_path / "run"]  # the fixture's run, resumed from its best checkpoint
    status, _, err = in_process(run_finetune.cli, argv)
    assert status == 2 and "holds the weights but no optimizer state" in err and "checkpoint-latest.pth" in err


def test_pretraining_state_loads_back_and_a_head_only_file_is_refused():
    model = create_model("pretrain_svfap_tiny_patch16_160", img_size=32, num_frames=8, stage_depths=(1, 1, 1),
                         decoder_depth=1)
    state = model.state_dict()
    assert any(k.startswith("encoder.blocks.") for k in state)
    load_model_state(model, state)  # what every resume of a pre-training run does
    fine = create_model("svfap_tiny_patch16_160", num_classes=3, img_size=32, all_frames=8, stage_depths=(1, 1, 1))
    head = {k: v for k, v in fine.state_dict().items() if k.split(".")[0] in ("fc_norm", "head")}
    with pytest.raises(Exception, match="only the trained part of a linear/LoRA run"):
        load_model_state(fine, head)


def test_a_stop_during_validation_exits_75_and_the_rerun_validates(demo, pretrained, tmp_path, monkeypatch):
    """The signal arrives as validation starts: the epoch is saved as trained, not validated; the
    rerun trains nothing, validates it, saves, tests."""
    out = tmp_path / "run"
    argv = [*FT, *data(demo), "--epochs", "1", "--finetune", pretrained, "--output_dir", out]
    real = run_finetune.predict

    def signalled(*a, **kw):
        if kw.get("header") == "Val:":
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)
    monkeypatch.setattr(run_finetune, "predict", signalled)
    status, stdout, _ = in_process(run_finetune.cli, argv)
    assert status == 75 and "stopped by SIGTERM" in stdout
    ckpt = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    steps = ckpt["resume"]["iteration"]
    assert ckpt["resume"]["epoch"] == 0 and steps > 0 and not (out / "checkpoint-best.pth").exists()
    monkeypatch.setattr(run_finetune, "predict", real)
    status, stdout, _ = in_process(run_finetune.cli, argv)
    assert status == 0 and f"(next: epoch 0, iteration {steps})" in stdout
    assert "Epoch: [0]" not in stdout.split("resumed from")[1].replace("Epoch: [0] total time", "")  # no step
    assert (out / "checkpoint-best.pth").is_file() and (out / "metrics.json").is_file()
    assert [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()] == [0]

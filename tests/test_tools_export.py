"""tools/export.py: a LoRA checkpoint exported to ONNX (merged on the way) gives PyTorch's logits in
onnxruntime for batches of 1 and 3, carries its class names and preprocessing as metadata, and the
standalone tools/onnx_predict.py reproduces tools.predict on a video."""
import ast
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import REPO
from datasets.demo import generate
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from engine.checkpoint import save_checkpoint, training_state
from models import load_pretrained, model_from_checkpoint
from models.tuning import Tuning, apply_tuning, backbone_reference
from test_models_tuning import ARGS, randomise_adapters, tiny
from tools import export, onnx_predict, predict

NAMES = ["joy", "anger", "sadness", "fear", "surprise"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LoRA checkpoint over a backbone file, its names file and its ONNX export."""
    root = tmp_path_factory.mktemp("export")
    args = {**ARGS, "sampling_rate": 2, "tuning": "lora"}
    save_checkpoint(str(root / "backbone.pth"), {"model": tiny(seed=3).state_dict(), "args": args})
    model = tiny(seed=4)
    load_pretrained(model, str(root / "backbone.pth"), verbose=False)
    apply_tuning(model, Tuning("lora"), backbone_reference(root / "backbone.pth"))
    randomise_adapters(model)
    save_checkpoint(str(root / "lora.pth"), training_state(model, args=args, epoch=0))
    (root / "names.txt").write_text("\n".join(NAMES) + "\n")
    assert export.main([str(root / "lora.pth"), "--format", "onnx", "--out", str(root / "model.onnx"),
                        "--class_names", str(root / "names.txt"), "--verify", "False"]) == 0
    return root


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_gives_the_lora_models_logits(exported, batch):
    model, _ = model_from_checkpoint(exported / "lora.pth")  # adapters unmerged
    x = torch.randn(batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"clip": x.numpy()})
    print(f"batch {batch}: max |onnxruntime - PyTorch| = {np.abs(out - ref).max():.2e}")
    assert out.shape == (batch, 5)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_the_metadata_says_how_to_build_a_clip(exported):
    graph = onnx.load(str(exported / "model.onnx"))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["class_names"]) == NAMES and meta["task"] == "classification"
    assert (meta["num_frames"], meta["sampling_rate"], meta["input_size"], meta["short_side_size"]) == ("8", "2", "32",
                                                                                                         "32")
    assert json.loads(meta["mean"]) == list(IMAGENET_DEFAULT_MEAN) and json.loads(meta["std"]) == list(IMAGENET_DEFAULT_STD)
    (clip,) = graph.graph.input
    dims = [d.dim_param or d.dim_value for d in clip.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 8, 32, 32]  # a dynamic batch


def test_onnx_predict_needs_nothing_from_this_repository():
    """Its promise is that it runs beside the .onnx file alone: only the standard library, numpy,
    PyAV and onnxruntime."""
    tree = ast.parse((REPO / "tools" / "onnx_predict.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"argparse", "json", "av", "numpy", "onnxruntime"}, imported


@pytest.mark.parametrize("size,atol", [(32, 2e-4), (64, 5e-3)])
def test_onnx_predict_gives_tools_predicts_probabilities(exported, tmp_path, capsys, size, atol):
    """At the model's 32 px it sees the frames tools.predict sees; at 64 px it resizes with PyAV's
    area filter where the repository uses torchvision's antialiased bilinear."""
    generate(str(tmp_path / "videos"), train_per_class=1, eval_per_class=1, frames=24, size=size)
    video = sorted((tmp_path / "videos").rglob("*.mp4"))[0]
    capsys.readouterr()
    assert onnx_predict.main([str(exported / "model.onnx"), str(video)]) == 0
    printed = {line.split()[0]: float(line.split()[1]) for line in capsys.readouterr().out.splitlines()}
    predictor = predict.Predictor(str(exported / "lora.pth"), class_names=str(exported / "names.txt"))
    expected = predictor.predict(str(video))
    assert len(expected["windows"]) == 2  # the last window ends on the last frame
    assert set(printed) == set(NAMES)
    np.testing.assert_allclose([printed[n] for n in NAMES], [expected["probs"][n] for n in NAMES], atol=atol)

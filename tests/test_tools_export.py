"""tools/export.py: a LoRA checkpoint exported to ONNX (merged on the way) gives PyTorch's logits in
onnxruntime for batches of 1 and 3, carries its class names and preprocessing as metadata, and the
README's snippet, run without this repository, reproduces tools.predict on a video."""
import json
import re
import subprocess
import sys

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
from tools import export, predict

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


def readme_snippet():
    text = (REPO / "README.md").read_text()
    section = text.split("## Running an exported model", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


@pytest.mark.parametrize("size,atol", [(32, 2e-4), (64, 5e-3)])
def test_the_readme_snippet_runs_the_model_without_the_repository(exported, tmp_path, size, atol):
    """At the model's 32 px the snippet sees the frames tools.predict sees; at 64 px it resizes
    with PyAV's area filter where the repository uses torchvision's antialiased bilinear."""
    generate(str(tmp_path / "videos"), train_per_class=1, eval_per_class=1, frames=24, size=size)
    video = sorted((tmp_path / "videos").rglob("*.mp4"))[0]
    (tmp_path / "run_onnx.py").write_text(readme_snippet())
    proc = subprocess.run([sys.executable, "-I", "run_onnx.py", str(exported / "model.onnx"), str(video)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = {line.split()[0]: float(line.split()[1]) for line in proc.stdout.splitlines()}
    predictor = predict.Predictor(str(exported / "lora.pth"), class_names=str(exported / "names.txt"))
    expected = predictor.predict(str(video))
    assert len(expected["windows"]) == 2  # the last window ends on the last frame
    assert set(printed) == set(NAMES)
    np.testing.assert_allclose([printed[n] for n in NAMES], [expected["probs"][n] for n in NAMES], atol=atol)

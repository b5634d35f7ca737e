"""The torch.compile path (the default on CUDA): both models and the benchmark's pre-training step
trace as one graph (no graph break, hence no host sync inside the model; static shapes under tube
masking) and give eager's numbers; --compile takes auto/True/False; a compiled run keeps inductor's
cache in its output folder and a second run there loads it instead of compiling."""
import json
import os
import re
import shutil
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import timm
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import models  # noqa: F401
import run_finetune
from conftest import REPO, in_process
from datasets.masking import TubeMaskGenerator
from engine.compile import compile_enabled, compiled
from engine.runtime import wrap_model

needs_compiler = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                    reason="torch.compile on CPU needs a C compiler")
TINY = dict(img_size=32, stage_depths=(1, 1, 1), embed_dim=48, num_heads=3)


def finetune_model():
    torch.manual_seed(0)
    return timm.create_model("svfap_tiny_patch16_160", init_scale=1.0, num_classes=4, **TINY)


def pretrain_model():
    torch.manual_seed(0)
    return timm.create_model("pretrain_svfap_tiny_patch16_160", decoder_embed_dim=32, decoder_num_heads=2,
                             decoder_depth=1, **TINY)


def tube_masks(model, batch, seed):
    generate = TubeMaskGenerator(model.encoder.grid_size, 0.75)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([generate(rng) for _ in range(batch)])), generate.num_masked


def eager_and_compiled(model, backend, inputs, loss):
    """Outputs and gradients of ``loss(model(*inputs))``, eager then compiled with fullgraph=True."""
    results = []
    for run in (model, torch.compile(model, fullgraph=True, backend=backend)):
        model.zero_grad()
        out = run(*inputs)
        loss(out).backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    return results


def assert_same_numbers(eager, compiled):
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=1e-4)
    for g, e in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_models_trace_as_one_graph_with_static_shapes():
    """fullgraph=True fails on any graph break; two batches with different tube masks of the same
    ratio reuse the one graph (the masked count is a static shape, read from nothing). The traced
    forward and backward (aot_eager: traced, run by eager kernels) give eager's numbers."""
    x = torch.randn(2, 3, 16, 32, 32)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    eager, compiled = eager_and_compiled(finetune_model(), counter, (x,), lambda out: out.sum())
    assert counter.frame_count == 1
    assert_same_numbers(eager, compiled)

    torch._dynamo.reset()
    model = pretrain_model()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    for seed in (0, 1):
        mask, count = tube_masks(model, 2, seed)
        out = compiled(x, mask, num_masked=count)
        assert out.shape == (2, count, 2 * 16 * 16 * 3)
        out.sum().backward()
    assert counter.frame_count == 1
    eager, compiled = eager_and_compiled(model, "aot_eager", (x, mask, count), lambda out: out.square().mean())
    assert_same_numbers(eager, compiled)


def test_benchmark_pretraining_step_is_the_training_path_in_one_graph():
    """tools.benchmark's pre-training step (uint8 frames and tube masks, targets and normalisation,
    the model with the static masked count, loss, backward, AdamW: engine.pretrain's loss and the
    entry point's Stepper) compiled as the benchmark compiles it, fullgraph=True: a graph break (an
    .item() or a mask read on the host included) would raise. Two steps compiled and two eager from
    the same weights give the same losses and weights."""
    from tools.benchmark import workloads
    args = Namespace(device="cpu", amp_dtype=None, quick=True, compile=False, compile_mode="default")
    runs = {}
    for compile_ in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = workloads.build_model("svfap_base", True, args)
        counter = CompileCounterWithBackend("aot_eager")
        initial = [p.detach().clone() for p in model.parameters()]
        step = workloads.make_step("pretrain", model, 2, Namespace(**{**vars(args), "compile": compile_,
                                                                       "compile_backend": counter}))
        losses = [step() for _ in range(2)]
        runs[compile_] = losses, [p.detach().clone() for p in model.parameters()]
        assert not torch.equal(runs[compile_][1][0], initial[0])  # the step trained
        if compile_:
            assert counter.frame_count == 1  # the model, traced once for both steps
    (eager_losses, eager_weights), (losses, weights) = runs[False], runs[True]
    torch.testing.assert_close(torch.stack(losses), torch.stack(eager_losses), atol=1e-6, rtol=1e-5)
    for w, e in zip(weights, eager_weights):
        torch.testing.assert_close(w, e, atol=1e-6, rtol=1e-5)


@needs_compiler
def test_compiled_pretraining_forward_matches_eager():
    """The inductor-compiled masked autoencoder (its forward: the backward's kernels take minutes to
    build on a small CPU, and the traced backward is checked above) against eager, to fp32 rounding."""
    model = pretrain_model()
    x = torch.randn(2, 3, 16, 32, 32)
    mask, count = tube_masks(model, 2, 0)
    with torch.no_grad():
        eager = model(x, mask)
        compiled_ = torch.compile(model, fullgraph=True)(x, mask, num_masked=count)
    torch.testing.assert_close(compiled_, eager, atol=1e-5, rtol=1e-4)


def test_compile_option_is_auto_true_or_false():
    """--compile auto (the default) compiles on CUDA and not on CPU; True/False (and a bare --compile)
    force it; anything else is refused. The entry points wrap the model as the loop calls it."""
    parser = run_finetune.get_args_parser()
    assert parser.parse_args([]).compile == "auto"
    assert parser.parse_args(["--compile"]).compile is True
    assert parser.parse_args(["--compile", "False"]).compile is False
    assert parser.parse_args(["--compile", "AUTO"]).compile == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "maybe"])
    assert compile_enabled("auto", "cuda") and compile_enabled("auto", "cuda:1")
    assert not compile_enabled("auto", "cpu") and compile_enabled(True, "cpu") and not compile_enabled(False, "cuda")
    model = finetune_model()
    wrapped = wrap_model(model, Namespace(distributed=False, compile=True, compile_mode="reduce-overhead",
                                          compile_cache=None), "cpu")
    assert wrapped is not model and wrapped._orig_mod is model
    assert wrap_model(model, Namespace(distributed=False, compile=False), "cpu") is model
    with pytest.raises(ValueError, match="reduce-overhead"):
        compiled(model, "fastest")


def _finetune(out, data, root, *extra, fresh_process=True):
    """A one-step fine-tuning run on four demo clips (in a fresh process, or in this one); its stdout
    and first training loss."""
    argv = ["--model", "svfap_tiny_patch16_160", "--data_set", "custom", "--nb_classes", "6", "--data_path", str(data),
            "--data_root", str(root), "--batch_size", "4", "--epochs", "1", "--stage_depths", "1", "--input_size", "32",
            "--num_frames", "4", "--drop_path", "0", "--num_workers", "0", "--device", "cpu", "--amp", "none",
            "--warmup_epochs", "0", "--auto_resume", "False", "--output_dir", str(out), *extra]
    if fresh_process:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        proc = subprocess.run([sys.executable, "run_finetune.py", *argv], cwd=REPO, capture_output=True, text=True,
                              timeout=900, env=env)
        status, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        status, stdout, stderr = in_process(run_finetune.cli, argv)
    assert status == 0, stdout[-3000:] + stderr[-3000:]
    loss = json.loads((out / "log.txt").read_text().splitlines()[-1])["train_loss"]
    return stdout, loss


@needs_compiler
def test_compile_cache_in_the_output_folder_is_reused_by_the_next_run(demo, tmp_path):
    """Two compiled runs in one output folder, each a fresh process (as a requeued job on another
    node is): the first compiles and fills OUTPUT_DIR/compile_cache, the second loads every graph from
    it, and says so; both train to eager's loss. Timings are not asserted (they are printed)."""
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test"):
        lines = (demo / f"{split}.csv").read_text().splitlines()
        (data / f"{split}.csv").write_text("\n".join(lines[:4]) + "\n")
    shutil.copy(demo / "classes.txt", data / "classes.txt")
    out = tmp_path / "run"
    first, compiled_loss = _finetune(out, data, demo, "--compile", "True")
    assert f"inductor cache {out / 'compile_cache'} (0 files there)" in first
    assert re.search(r"torch\.compile: [\d.]+ s compiling the first step; cache miss: 0 graphs loaded from the "
                     r"cache, [1-9]\d* compiled", first)
    assert any((out / "compile_cache").rglob("*")), "nothing cached in the output folder"
    second, second_loss = _finetune(out, data, demo, "--compile", "True")
    hit = re.search(r"torch\.compile: ([\d.]+) s compiling the first step; cache hit: ([1-9]\d*) graphs loaded "
                    r"from the cache, 0 compiled", second)
    assert hit, second
    seconds = [float(re.search(r"torch\.compile: ([\d.]+) s compiling", text).group(1)) for text in (first, second)]
    print(f"compiling the first step: {seconds[0]:.1f} s, then {seconds[1]:.1f} s from the cache")
    eager, eager_loss = _finetune(tmp_path / "eager", data, demo, "--compile", "auto", fresh_process=False)
    assert "torch.compile: off (--compile auto on cpu: on CUDA only)" in eager
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5) and second_loss == pytest.approx(eager_loss, rel=1e-5)

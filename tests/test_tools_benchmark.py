"""The benchmarks, in process on tiny models and sets: their tables and lines come out with every row
and numeric fields, the GPU check keeps to its budget and survives a failing row. Structure, never
timings: no number measured here is asserted beyond being a number."""
import os
import re

import pytest
import torch

from tools.benchmark import gpu_check, loader, loader_cpu
from tools.benchmark import steps as benchmark
from tools.benchmark.memory import FreshProcesses
from tools.benchmark.report import Row

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@pytest.fixture
def threads(monkeypatch):
    """The benchmarks set torch's thread count (and the GPU check inductor's cache folder) for the
    process; give the suite its own back."""
    before = torch.get_num_threads()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))
    yield
    torch.set_num_threads(before)


def table_rows(stdout):
    """Table lines by row name (the name is the text before the first run of 2+ spaces)."""
    table = next(block for block in stdout.split("\n\n") if block.lstrip().startswith("row "))
    return {name: fields for name, *fields in (re.split(r"\s{2,}", line.strip()) for line in table.splitlines()[2:])}


def test_step_benchmark_table_ratios_and_markdown(tmp_path, capsys, threads):
    md = tmp_path / "cpu.md"
    benchmark.main(["--quick", "--threads", "1", "--amp", "none", "--only", "pretrain", "--markdown", str(md)])
    stdout = capsys.readouterr().out
    rows = table_rows(stdout)
    steps = ["pretrain svfap_base", "pretrain videomae_base"]
    assert set(rows) == {"matmul 256x256 fp32", *steps}
    for name in steps:
        batch, reps, ms, clips, gflops, peak, mem = rows[name][:7]
        assert all(NUMBER.match(v) for v in (batch, reps, ms, clips, gflops, peak, mem)), rows[name]
        assert NUMBER.match(rows[name][7]) and rows[name][8] == "speed vs videomae_base"
    assert re.search(r"svfap_base pre-training step is \d+\.\d\dx (faster than|as fast as) videomae_base", stdout)
    text = md.read_text()
    assert "python -m tools.benchmark --quick --threads 1" in text and "- machine: " in text and "## Ratios" in text
    md_rows = {line.split("|")[1].strip() for line in text.splitlines()
               if line.startswith("| ") and not line.startswith("| row |")}
    assert md_rows == set(rows)


def test_memory_row_runs_in_a_fresh_process():
    """CPU peak memory is the growth of a freshly forked process's peak RSS over one step."""
    args = benchmark.parse_args(["--quick", "--threads", "1", "--amp", "none"])
    seconds, mb = FreshProcesses().measure(Row("memory", "memory train svfap_small", 2, model="svfap_small",
                                               step="train"), args)
    assert seconds > 0 and mb >= 0


def test_only_filters_rows_and_rejects_unknown_names():
    args = benchmark.parse_args(["--only", "memory", "svfap_small"])
    names = [r.name for r in benchmark.plan(args)]
    assert "memory train svfap_base ckpt" in names and "train svfap_small" in names
    assert "train svfap_base" not in names and "infer videomae_base" not in names
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--only", "nonsense"])


# A budget no machine load can use up: which rows run must not depend on how busy the machine is
# (the test of the budget gives its own).
GPU_CHECK = ["--device", "cpu", "--quick", "--amp", "none", "--modes", "eager", "--batch_sizes", "2", "--steps", "1",
             "--warmup", "0", "--profile_steps", "1", "--budget_s", "1e9"]


@pytest.fixture
def gpu_check_args(tmp_path):
    return [*GPU_CHECK, "--compile_cache", str(tmp_path / "compile_cache")]


def test_gpu_check_cpu_path(tmp_path, capsys, threads, gpu_check_args):
    """The check's rows on CPU (ATen ops in place of kernels), the end-to-end rows fed by one loader
    worker, the summary and the markdown."""
    md = tmp_path / "gpu.md"
    gpu_check.main([*gpu_check_args, "--e2e_workers", "1", "--e2e_steps", "1", "--repeats", "1", "--markdown", str(md)])
    stdout = capsys.readouterr().out
    for task in ("pretrain", "finetune"):
        for model in ("svfap_base", "videomae_base"):
            assert re.search(rf"eager {task} {model} @2: [\d.]+ ms/step, [\d.]+ clips/s, \d+ ATen ops/step, "
                             r"host sync: -", stdout)
    assert re.search(r"e2e eager pretrain svfap_base @2, 1 loader worker: [\d.]+ clips/s = \d+% of the same step fed "
                     r"one batch on the device \([\d.]+ clips/s\)", stdout)
    assert "4 of 4 rows measured" in stdout
    table = [line for line in md.read_text().splitlines() if line.startswith("| eager")]
    assert len(table) == 4
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(NUMBER.match(c) for c in cells[3:9]), cells  # batch .. ATen ops/step
        assert cells[2] != "videomae_base" or cells[6] == "1.00"  # per clip, against ViT-B
    assert "## End to end" in md.read_text()


def test_gpu_check_skips_what_does_not_fit_and_survives_a_failing_row(capsys, threads, gpu_check_args):
    gpu_check.main([*gpu_check_args, "--budget_s", "0.5", "--modes", "eager", "compiled", "--e2e_workers", "1"])
    stdout = capsys.readouterr().out
    skipped = re.findall(r"^\[.*\] (\w+ \w+ \w+ @2): skipped: ~\d+ s needed, 0 s of the budget left$", stdout, re.M)
    assert len(skipped) == 8 and "e2e: skipped" in stdout and "0 of 8 rows measured" in stdout
    # Mixup pairs the clips of a batch: an odd batch fails that row, and the check goes on.
    gpu_check.main([*gpu_check_args, "--tasks", "finetune", "pretrain", "--models", "videomae_base",
                    "--batch_sizes", "3", "--e2e_workers"])
    stdout = capsys.readouterr().out
    assert re.search(r"eager finetune videomae_base @3: failed: \w+", stdout)
    assert re.search(r"eager pretrain videomae_base @3: [\d.]+ ms/step", stdout) and "1 of 2 rows measured" in stdout


def test_loader_benchmark_prints_every_row(capsys, threads):
    """Decode-only and loader rows against the naive reader, then CPU ms per delivered clip of every
    loader configuration; a worker whose CPU time reads 0 (clock ticks) is printed, not divided by."""
    loader.main(["--frames", "24", "--size", "64", "--train_per_class", "1", "--num_frames", "4", "--sampling_rate",
                 "2", "--input_size", "32", "--gop", "8", "--workers", "0", "--backend", "pyav", "--repeats", "1",
                 "--min_clips", "2", "--num_samples", "2", "--ft_size", "64", "--ft_frames", "16", "--cpu_rounds", "1",
                 "--cpu_clips", "2", "--cpu_seconds", "0"])
    stdout = capsys.readouterr().out
    rows = re.findall(r"^  (.+?)\s+ours\s+([\d.]+)\s+naive\s+([\d.]+) clips/s\s+\(([\d.]+)x\)$", stdout, re.M)
    assert {r[0] for r in rows} == {"decode only (pyav)", "decode only (decord)", "read only",
                                    "fine-tuning loader, 0 workers (pyav)", "pre-training loader, 0 workers (pyav)",
                                    "fine-tuning loader, 0 workers"}
    cpu = re.findall(r"^  (.+?)\s+worker\s+([\d.]+) ms/clip \[[\d.]+-[\d.]+\]\s+main\s+([\d.]+) ms/clip$", stdout, re.M)
    assert {c[0] for c in cpu} == {"pre-training", "pre-training, num_samples 2", "pre-training, recropped",
                                   "pre-training, recropped, num_samples 2", "fine-tuning videos",
                                   "fine-tuning jpg frame folders"}
    assert "host float" not in stdout and "old path" not in stdout
    zero = loader_cpu.Config("idle", None, None, worker_ms=[0.0], main_ms=[0.0])
    assert loader_cpu.report([zero]) == ["  idle  worker    0.0 ms/clip [0.0-0.0]  main   0.0 ms/clip"]


def test_face_benchmark_prints_a_row_per_min_face(opencv_data, capsys):
    """python -m tools.benchmark.faces on every 9th frame of Megamind.avi: a row of numbers per
    --min_face, and the photographs with the faces expected and found."""
    from tools.benchmark import faces
    faces.main(["--step", "9", "--repeats", "1", "--min_face", "0.25", "0.3"])
    stdout = capsys.readouterr().out
    rows = re.findall(r"^\s+(0\.\d\d)((?:\s+[\d.]+){7})$", stdout, re.M)
    assert [r[0] for r in rows] == ["0.25", "0.30"]
    found = [float(v) for v in rows[0][1].split()][1]
    assert 0.9 < found <= 1.0  # the face of Megamind.avi is found in almost every lit frame
    photos = dict(re.findall(r"^(\S+\.jpg)\s+(\d+\s+\d+)$", stdout, re.M))
    assert photos["opencv4/html/facereg.jpg"].split() == ["4", "4"]
    assert photos["examples/data/baboon.jpg"].split() == ["0", "0"]


def test_fidelity_benchmark_measures_every_step_against_the_releases_operation(opencv_data, capsys):
    """python -m tools.benchmark.fidelity on one Megamind.avi frame: a row per step at 720x528 and
    at 256x256, within what docs/recipes.md states, and the cost of both RandAugments."""
    from tools.benchmark import fidelity
    assert fidelity.main(["--video", str(opencv_data / "Megamind.avi"), "--frames", "1", "--seeds", "3",
                          "--rounds", "1", "--clips", "2"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(\S.+?)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(rows) == 2 * 12
    for name, worst, mean in rows:
        worst, mean = float(worst), float(mean)
        if "resize" in name or "crop" in name:
            assert worst <= 2 and mean < 0.3, name  # rounding: the uint8 crop, torchvision vs PIL
        elif "chain" not in name:  # the warps and Sharpness: resampling, not other pixels
            assert worst <= 16 and mean < 0.5, name
        else:
            assert mean < 1.0, name
    costs = re.findall(r"^(this project's RandAugment|timm's PIL ops per frame)\s+([\d.]+)$", out, re.M)
    assert len(costs) == 2 and all(float(ms) > 0 for _, ms in costs)

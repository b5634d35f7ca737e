"""The benchmarks end to end in --quick mode (tiny models): the table, ratios and markdown come out
with every row and numeric fields. No timing is asserted."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

STEP_ROWS = ["train svfap_base", "train svfap_small", "train videomae_base",
             "infer svfap_base", "infer svfap_small", "infer videomae_base",
             "pretrain svfap_base", "pretrain videomae_base"]
MEMORY_ROWS = [f"memory {s} {m}{c}" for s, models in (("train", ["svfap_base", "svfap_small", "videomae_base"]),
                                                      ("pretrain", ["svfap_base", "videomae_base"]))
               for m in models for c in ("", " ckpt")]
LOADER_ROWS = ["loader 1 worker", "loader 2 workers"]
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    md = tmp_path_factory.mktemp("bench") / "cpu.md"
    # One thread: on a busy shared CPU, two OpenMP threads make the tiny steps wait for each other.
    # fp32: --amp auto would be bf16 on CPUs with native bf16.
    proc = subprocess.run([sys.executable, "-m", "tools.benchmark", "--quick", "--threads", "1", "--workers", "1", "2",
                           "--amp", "none", "--markdown", str(md)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, md.read_text()


def table_rows(stdout):
    """Table lines by row name (the name is the text before the first run of 2+ spaces)."""
    lines = stdout.split("\n\n")
    table = next(block for block in lines if block.lstrip().startswith("row "))
    rows = {}
    for line in table.splitlines()[2:]:
        name, *fields = re.split(r"\s{2,}", line.strip())
        rows[name] = fields
    return rows


def test_text_table_has_every_row_with_numbers(quick_run):
    stdout, _ = quick_run
    rows = table_rows(stdout)
    matmul = [name for name in rows if name.startswith("matmul")]
    assert len(matmul) == 1 and matmul[0].endswith("fp32")
    assert set(rows) == set(matmul + STEP_ROWS + MEMORY_ROWS + LOADER_ROWS)
    for name in STEP_ROWS + MEMORY_ROWS:
        batch, reps, ms, clips, gflops, peak, mem = rows[name][:7]
        for value in (batch, reps, ms, clips, gflops, peak, mem):
            assert NUMBER.match(value), (name, rows[name])
        assert float(ms) > 0 and float(clips) > 0
    for name in STEP_ROWS:  # every step row is compared with the videomae_base row of its kind
        assert NUMBER.match(rows[name][7]) and "videomae_base" in rows[name][8]
    for name in MEMORY_ROWS:
        if name.endswith("ckpt"):
            # tiny --quick models can stay inside memory the process already had: no growth, no ratio
            if float(rows[name[: -len(" ckpt")]][6]) > 0:
                assert NUMBER.match(rows[name][7]) and rows[name][8] == "memory vs no ckpt"
            else:
                assert rows[name][7] == "-"
    for name in LOADER_ROWS:
        assert NUMBER.match(rows[name][3]) and float(rows[name][3]) > 0  # clips/s
        assert NUMBER.match(rows[name][7])  # against the svfap_base training step


def test_ratio_lines_and_no_targets(quick_run):
    stdout, _ = quick_run
    assert re.search(r"svfap_base train step is \d+\.\d\dx (faster than|as fast as) videomae_base", stdout)
    assert re.search(r"svfap_base pre-training step is \d+\.\d\dx", stdout)
    if float(table_rows(stdout)["memory train svfap_base"][6]) > 0:  # see the memory rows above
        assert re.search(r"activation checkpointing cuts the peak memory of train svfap_base at batch 2 by -?\d+%",
                         stdout)
    assert "loader 2 workers: " in stdout
    assert not re.findall(r"^(PASS|FAIL|n/a): ", stdout, flags=re.M)  # a tool, not an acceptance test


def test_markdown_matches_the_table(quick_run):
    stdout, md = quick_run
    assert "python -m tools.benchmark --quick --threads 1" in md
    assert "- machine: " in md and "torch " in md and "- date: " in md
    header = next(line for line in md.splitlines() if line.startswith("| row |"))
    assert header.count("|") == 11
    md_rows = {line.split("|")[1].strip(): line for line in md.splitlines()
               if line.startswith("| ") and not line.startswith("| row |")}
    assert set(md_rows) == set(table_rows(stdout))
    assert "## Ratios" in md and "Targets" not in md and "docs/benchmarks.md" in md


def test_precision_against_fp32_in_one_run():
    """--vs_fp32 steps svfap_base in fp32 among the train rows and states the run's speed-up over it."""
    proc = subprocess.run([sys.executable, "-m", "tools.benchmark", "--quick", "--threads", "1", "--only", "train",
                           "--amp", "bf16", "--vs_fp32"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert set(rows) == {"matmul 256x256 bf16", "train svfap_base", "train svfap_small", "train videomae_base",
                         "train svfap_base fp32"}
    assert NUMBER.match(rows["train svfap_base fp32"][7]) and rows["train svfap_base fp32"][8] == "speed vs train svfap_base"
    assert re.search(r"svfap_base train step at the run's precision is \d+\.\d\dx as fast as in fp32", proc.stdout)


def test_end_to_end_rows_feed_the_pretraining_step_from_its_loader():
    """--only e2e: pre-training fed by its loader with 1 worker, against the same step fed one batch
    on the device, in the same rounds; the ratio line states the fraction of the model-only rate."""
    proc = subprocess.run([sys.executable, "-m", "tools.benchmark", "--quick", "--threads", "1", "--only", "e2e",
                           "--amp", "none", "--e2e_workers", "1"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert set(rows) == {"matmul 256x256 fp32", "e2e pretrain svfap_base, model only", "e2e pretrain svfap_base, 1 worker"}
    alone, fed = rows["e2e pretrain svfap_base, model only"], rows["e2e pretrain svfap_base, 1 worker"]
    assert alone[1] == fed[1] == "4"  # --quick: 2 rounds of 2 steps each
    for fields in (alone, fed):
        assert NUMBER.match(fields[2]) and float(fields[3]) > 0 and NUMBER.match(fields[4])  # ms/step, clips/s, GFLOP/s
    assert NUMBER.match(fed[7]) and fed[8] == "clips/s vs model only" and alone[7] == "-"
    assert re.search(r"e2e pretrain svfap_base, 1 worker: [\d.]+ clips/s = \d+% of the same step fed one batch "
                     r"on the device \([\d.]+ clips/s, in the same rounds\)", proc.stdout)


def test_only_filters_rows_and_rejects_unknown_names():
    from tools.benchmark import steps as benchmark

    args = benchmark.parse_args(["--only", "memory", "svfap_small"])
    names = [r.name for r in benchmark.plan(args)]
    assert "memory train svfap_base ckpt" in names and "train svfap_small" in names
    assert "train svfap_base" not in names and "infer videomae_base" not in names
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--only", "nonsense"])


def test_loader_benchmark_prints_every_row_with_ratios():
    """python -m tools.benchmark.loader on tiny generated sets: decode-only rows for both backends,
    fine-tuning and pre-training loader rows for both backends, fine-tuning rows for frame
    folders, each with a ratio; then CPU ms per delivered clip of every loader configuration,
    against today's host-float path."""
    proc = subprocess.run([sys.executable, "-m", "tools.benchmark.loader", "--frames", "24", "--size", "64",
                           "--train_per_class", "1", "--num_frames", "4", "--sampling_rate", "2",
                           "--input_size", "32", "--gop", "8", "--workers", "0", "1", "--repeats", "1",
                           "--min_clips", "4", "--ft_size", "64", "--ft_frames", "16", "--cpu_rounds", "2",
                           "--cpu_clips", "4", "--cpu_seconds", "0"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r"^  (.+?)\s+ours\s+([\d.]+)\s+naive\s+([\d.]+) clips/s\s+\(([\d.]+)x\)$",
                      proc.stdout, re.M)
    labels = [r[0] for r in rows]
    for backend in ("decord", "pyav"):
        assert f"decode only ({backend})" in labels
        assert f"fine-tuning loader, 1 worker ({backend})" in labels
        assert f"pre-training loader, 0 workers ({backend})" in labels
    assert "read only" in labels and "fine-tuning loader, 1 worker" in labels
    assert len(rows) == 3 + 2 * 2 * 2 + 2
    assert all(float(v) > 0 for r in rows for v in r[1:])

    assert re.search(r"recrop \(preprocess.voxceleb2 --recrop\): \d+ CPU ms per source clip", proc.stdout)
    cpu = dict((m[0], m[1:]) for m in re.findall(
        r"^  (.+?)\s+worker\s+([\d.]+) ms/clip \[[\d.]+-[\d.]+\]\s+main\s+([\d.]+) ms/clip(?:\s+([\d.]+)x less)?",
        proc.stdout, re.M))
    today = ["pre-training, host float (old path)", "fine-tuning videos, host float (old path)",
             "fine-tuning jpg frame folders, host float (old path)"]
    ours = [f"pre-training{r}, uint8{k}" for r in ("", ", recropped") for k in ("", ", num_samples 4")]
    ours += ["fine-tuning videos, uint8", "fine-tuning jpg frame folders, uint8"]
    assert set(cpu) == set(today + ours)
    for label, (worker, main, ratio) in cpu.items():
        assert float(worker) > 0 and float(main) >= 0
        assert (ratio == "") == (label in today)  # every new path is compared with today's

def test_face_benchmark_prints_a_row_per_min_face(opencv_data):
    """python -m tools.benchmark.faces on every 9th frame of Megamind.avi: a row of numbers per
    --min_face, and the photographs with the faces expected and found."""
    proc = subprocess.run([sys.executable, "-m", "tools.benchmark.faces", "--step", "9", "--repeats", "1",
                           "--min_face", "0.25", "0.3"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r"^\s+(0\.\d\d)((?:\s+[\d.]+){7})$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["0.25", "0.30"]
    found = [float(v) for v in rows[0][1].split()][1]
    assert 0.9 < found <= 1.0  # the face of Megamind.avi is found in almost every lit frame
    photos = dict(re.findall(r"^(\S+\.jpg)\s+(\d+\s+\d+)$", proc.stdout, re.M))
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

"""scripts/: syntax, and the commands DRY_RUN=1 prints checked against the recipes of docs/recipes.md."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").rglob("*.sh"))
FINETUNE = sorted(p for p in SCRIPTS if p.name.startswith("finetune_"))


def dry(script, *args, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("NPROC_PER_NODE", "NNODES", "UPDATE_FREQ",
                                                           "MAX_BATCH_PER_GPU", "TOTAL_BATCH")}
    e.update({"DRY_RUN": "1", "NPROC_PER_NODE": "1"}, **env)
    r = subprocess.run(["bash", str(REPO / "scripts" / script), *args], env=e, capture_output=True,
                       text=True, timeout=60)
    return r


def commands(script, *args, **env):
    r = dry(script, *args, **env)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in r.stdout.splitlines() if line.strip()]


def parse(cmd):
    """{flag: [values]} of the entry point's arguments, and the launcher's settings."""
    launcher = {a.split("=")[0]: a.split("=")[1] for a in cmd if a.startswith("--") and "=" in a}
    i = next(k for k, a in enumerate(cmd) if a.endswith(".py"))
    args, key = {}, None
    for a in cmd[i + 1:]:
        if a.startswith("--"):
            assert a not in args or a == "--num_workers", f"{a} given twice"
            key = a
            args[key] = []  # a repeated flag: the last one wins, as with argparse
        else:
            args[key].append(a)
    return Path(cmd[i]).name, launcher, {k: " ".join(v) for k, v in args.items()}


def test_scripts_and_count():
    assert len(FINETUNE) == 18 and (REPO / "scripts/voxceleb2/pretrain_base.sh").is_file()
    assert (REPO / "scripts/voxceleb2/pretrain_small.sh").is_file()
    for s in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, f"{s}: {r.stderr}"


FINETUNE_RECIPE = {
    "--lr": "1e-3", "--min_lr": "1e-6", "--warmup_epochs": "5", "--epochs": "100", "--opt": "adamw",
    "--opt_betas": "0.9 0.999", "--weight_decay": "0.05", "--layer_decay": "0.75", "--drop_path": "0.1",
    "--num_frames": "16", "--input_size": "160", "--aa": "rand-m7-n4-mstd0.5-inc1", "--reprob": "0.25",
    "--mixup": "0.8", "--cutmix": "1.0", "--smoothing": "0.1", "--num_sample": "1",
    "--test_num_segment": "2", "--test_num_crop": "1",
}


@pytest.mark.parametrize("script,data_set,nb,stride,folds", [
    ("dfew/finetune_base.sh", "DFEW", "7", "4", 5),
    ("dfew/finetune_small.sh", "DFEW", "7", "4", 5),
    ("ferv39k/finetune_base.sh", "FERV39K", "7", "1", 1),
])
def test_finetune_recipe(script, data_set, nb, stride, folds):
    cmds = commands(script, "--num_workers", "3", NPROC_PER_NODE="4", NNODES="2", MASTER_ADDR="10.0.0.1")
    *runs, pool = cmds
    assert len(runs) == 2 * folds
    trains, evals = runs[0::2], runs[1::2]
    size = "small" if "small" in script else "base"
    for k, (tr, ev) in enumerate(zip(trains, evals)):
        name, launcher, a = parse(tr)
        assert name == "run_finetune.py" and tr[0] == "torchrun"
        assert launcher == {"--nnodes": "2", "--nproc_per_node": "4", "--node_rank": "0",
                            "--master_addr": "10.0.0.1", "--master_port": "29500"}
        for flag, v in FINETUNE_RECIPE.items():
            assert a[flag] == v, flag
        assert a["--sampling_rate"] == stride and a["--data_set"] == data_set and a["--nb_classes"] == nb
        assert a["--model"] == f"svfap_{size}_patch16_160"
        # Paper: total batch 96 = per-process batch x processes x accumulation.
        assert int(a["--batch_size"]) * 8 * int(a["--update_freq"]) == 96
        assert a["--num_workers"] == "3"  # extra arguments reach the entry point, last
        fold_dir = f"split{k + 1:02d}" if folds > 1 else ""
        assert a["--data_path"].rstrip("/").endswith(f"{script.split('/')[0]}{'/' + fold_dir if fold_dir else ''}")
        _, _, e = parse(ev)
        assert e["--eval"] == "True" and e["--finetune"] == f"{a['--output_dir']}/checkpoint-best.pth"
        assert e["--test_num_segment"] == "2" and e["--test_num_crop"] == "1" and e["--sampling_rate"] == stride
        assert e["--data_path"] == a["--data_path"]
    assert pool[:3] == ["python", "-m", "engine.pool_folds"]
    assert pool[pool.index("--data_set") + 1] == data_set
    assert pool[pool.index("--pred_dirs") + 1:] == [parse(ev)[2]["--output_dir"] for ev in evals]


def test_pretrain_recipe():
    (cmd,) = commands("voxceleb2/pretrain_base.sh", NPROC_PER_NODE="4", MAX_BATCH_PER_GPU="32")
    name, launcher, a = parse(cmd)
    assert name == "run_pretrain.py" and launcher["--nproc_per_node"] == "4"
    want = {"--mask_type": "tube", "--mask_ratio": "0.9", "--decoder_depth": "4", "--lr": "3e-4",
            "--min_lr": "1e-5", "--epochs": "100", "--warmup_epochs": "5", "--opt_betas": "0.9 0.95",
            "--weight_decay": "0.05", "--num_frames": "16", "--sampling_rate": "4", "--input_size": "160",
            "--normlize_target": "True", "--face_crop": "True", "--model": "pretrain_svfap_base_patch16_160",
            "--data_set": "VOXCELEB2"}
    for flag, v in want.items():
        assert a[flag] == v, flag
    assert (a["--batch_size"], a["--update_freq"]) == ("32", "2")
    assert int(a["--batch_size"]) * 4 * int(a["--update_freq"]) == 256
    (small,) = commands("voxceleb2/pretrain_small.sh", NPROC_PER_NODE="8")
    s = parse(small)[2]
    assert s["--model"] == "pretrain_svfap_small_patch16_160" and s["--batch_size"] == "32"


def test_batch_that_cannot_split_fails_clearly():
    r = dry("dfew/finetune_base.sh", NPROC_PER_NODE="5")
    assert r.returncode != 0 and "does not split evenly" in r.stderr and "torchrun" not in r.stdout
    # The release's total batch is one variable away, and still exact.
    a = parse(commands("dfew/finetune_base.sh", NPROC_PER_NODE="2", TOTAL_BATCH="64")[0])[2]
    assert a["--batch_size"] == "32"


def test_every_finetune_script_dry_runs():
    for s in FINETUNE:
        cmds = commands(str(s.relative_to(REPO / "scripts")), NPROC_PER_NODE="2")
        assert cmds[-1][2] == "engine.pool_folds"
        runs = [c for c in cmds if c[0] == "torchrun"]
        assert len(runs) + sum(c[2] == "engine.pool_folds" for c in cmds) == len(cmds)
        for c in runs:
            a = parse(c)[2]
            assert int(a["--batch_size"]) * 2 == 96
            if "--mixup" in a:  # mixup and smoothing mix class targets: off for regression
                regression = a["--data_set"] in ("WEREWOLF-XL", "FIRST-IMPRESSIONS")
                assert (a["--mixup"], a["--smoothing"]) == (("0.0", "0.0") if regression else ("0.8", "0.1"))

"""scripts/: every script spells out the recipe of engine/recipes.py (the entry points' defaults),
takes its splits and classes from the dataset registry, and splits the total batch exactly."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

import run_finetune
import run_pretrain
from datasets.registry import get_dataset_info, sampling_rate_of
from engine.recipes import FINETUNE, PRETRAIN, parser_defaults
from models import create_model

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").rglob("*.sh"))
FINETUNE_SCRIPTS = sorted(str(p.relative_to(REPO / "scripts")) for p in SCRIPTS if p.name.startswith("finetune_"))
PRETRAIN_SCRIPTS = ["voxceleb2/pretrain_base.sh", "voxceleb2/pretrain_small.sh"]


def dry(script, *args, cwd=REPO, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("NPROC_PER_NODE", "NNODES", "UPDATE_FREQ",
                                                           "MAX_BATCH_PER_GPU", "TOTAL_BATCH", "PYTHON")}
    e.update({"DRY_RUN": "1", "NPROC_PER_NODE": "1"}, **env)
    return subprocess.run(["bash", str(REPO / "scripts" / script), *args], env=e, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def commands(script, *args, **env):
    r = dry(script, *args, **env)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in r.stdout.splitlines() if line.strip()]


def parse(cmd):
    """(entry point, launcher options, {option: value}) of one printed command."""
    launcher = {a.split("=")[0]: a.split("=")[1] for a in cmd if a.startswith("--") and "=" in a}
    i = next(k for k, a in enumerate(cmd) if a.endswith(".py"))
    args, key = {}, None
    for a in cmd[i + 1:]:
        if a.startswith("--"):
            assert a not in args or a == "--num_workers", f"{a} given twice"
            key = a
            args[key] = []
        else:
            args[key].append(a)
    return Path(cmd[i]).name, launcher, {k: " ".join(v) for k, v in args.items()}


def same(text, value):
    """An option as the shell wrote it against the recipe's Python value."""
    if isinstance(value, bool):
        return text == str(value)
    if isinstance(value, (int, float)):
        return float(text) == value
    if isinstance(value, list):
        return [float(v) for v in text.split()] == value
    return text == value


def test_scripts_parse():
    assert len(FINETUNE_SCRIPTS) == 18
    for s in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, f"{s}: {r.stderr}"


@pytest.mark.parametrize("script", FINETUNE_SCRIPTS)
def test_finetune_script_spells_out_the_recipe(script):
    cmds = commands(script, "--num_workers", "3", NPROC_PER_NODE="4", NNODES="2", MASTER_ADDR="10.0.0.1")
    runs = [c for c in cmds if "run_finetune.py" in c]
    trains, evals = runs[0::2], runs[1::2]
    data_set = parse(trains[0])[2]["--data_set"]
    info = get_dataset_info(data_set)
    # Regression targets are no one-hot classes: run_finetune.py mixes and smooths nothing for them,
    # and the scripts say so by spelling these 0.
    recipe = {**FINETUNE, **({"mixup": 0.0, "cutmix": 0.0, "smoothing": 0.0} if info.task == "regression" else {})}
    assert len(trains) == len(evals) == len(info.splits)  # one run per split the registry lists
    for train, ev in zip(trains, evals):
        name, launcher, a = parse(train)
        assert train[1:3] == ["-m", "engine.launch"]  # torchrun through the interpreter, with the stop signals
        assert launcher == {"--nnodes": "2", "--nproc_per_node": "4", "--node_rank": "0",
                            "--master_addr": "10.0.0.1", "--master_port": "29500"}
        for key, value in parser_defaults(recipe).items():
            assert same(a[f"--{key}"], value), (script, key, a[f"--{key}"], value)
        assert int(a["--sampling_rate"]) == info.sampling_rate
        assert int(a["--batch_size"]) * 8 * int(a["--update_freq"]) == recipe["total_batch"]
        assert "--nb_classes" not in a and "--val_metric" not in a  # the registry's
        assert a["--num_workers"] == "3"  # extra arguments reach the entry point, last
        run_finetune.get_args_parser().parse_args(train[train.index("run_finetune.py") + 1:])
        _, _, e = parse(ev)
        # the last epoch's checkpoint, as the release tested (nothing is selected on the test split)
        last = f"{a['--output_dir']}/checkpoint-{int(a['--epochs']) - 1}.pth"
        assert e["--eval"] == "True" and e["--finetune"] == last
        assert "--num_frames" not in e and "--input_size" not in e  # the checkpoint's
        run_finetune.get_args_parser().parse_args(ev[ev.index("run_finetune.py") + 1:])
    pools = [c for c in cmds if "engine.pool_folds" in c]
    assert len(pools) == (1 if info.pool == "joint" else len(info.splits))
    assert pools[-1][1:3] == ["-m", "engine.pool_folds"] and pools[-1][pools[-1].index("--data_set") + 1] == data_set
    if info.pool == "joint":  # the pooled report goes under the run's output folder, folds named by split
        out = parse(trains[0])[2]["--output_dir"]
        out = out if info.splits == (".",) else out.rsplit("/", 1)[0]
        assert pools[-1][pools[-1].index("--output_dir") + 1] == f"{out}/pooled"
        names = pools[-1][pools[-1].index("--fold_names") + 1:pools[-1].index("--output_dir")]
        assert names == list(info.splits)


@pytest.mark.parametrize("script", PRETRAIN_SCRIPTS)
def test_pretrain_script_spells_out_the_recipe(script):
    (cmd,) = commands(script, NPROC_PER_NODE="4", MAX_BATCH_PER_GPU="32")
    name, launcher, a = parse(cmd)
    assert name == "run_pretrain.py" and launcher["--nproc_per_node"] == "4"
    for key, value in PRETRAIN.items():
        if key != "total_batch":
            assert same(a[f"--{key}"], value), (key, a[f"--{key}"], value)
    assert a["--face_crop"] == "True" and a["--model"].startswith("pretrain_svfap_")
    assert (a["--batch_size"], a["--update_freq"]) == ("32", "2")
    run_pretrain.get_args_parser().parse_args(cmd[cmd.index("run_pretrain.py") + 1:])


def test_entry_point_defaults_are_the_recipe():
    f = run_finetune.get_args_parser().parse_args([])
    p = run_pretrain.get_args_parser().parse_args([])
    for args, recipe in ((f, FINETUNE), (p, PRETRAIN)):
        for key, value in parser_defaults(recipe).items():
            assert getattr(args, key) == value, key
    # The decoder depth is the models' own default: the paper's models have the recipe's.
    for name in ("pretrain_svfap_base_patch16_160", "pretrain_svfap_small_patch16_160"):
        model = create_model(name, img_size=32, stage_depths=(1, 1, 1), num_frames=8)
        assert len(model.decoder.blocks) == PRETRAIN["decoder_depth"]


def test_batch_that_cannot_split_fails_clearly():
    r = dry("dfew/finetune_base.sh", NPROC_PER_NODE="5")
    assert r.returncode != 0 and "does not split evenly" in r.stderr and "run_finetune" not in r.stdout
    a = parse(commands("dfew/finetune_base.sh", NPROC_PER_NODE="2", TOTAL_BATCH="64")[0])[2]
    assert a["--batch_size"] == "32"


def test_scripts_run_from_the_repository_root_and_warn_about_loopback(tmp_path):
    r = dry("dfew/finetune_base.sh", cwd=tmp_path)
    assert r.returncode != 0 and "run the scripts from the repository root" in r.stderr
    r = dry("voxceleb2/pretrain_base.sh", NNODES="2")
    assert r.returncode == 0 and "MASTER_ADDR=127.0.0.1" in r.stderr and "warning" in r.stderr


def test_a_checkpoint_without_a_stride_gets_its_datasets_recipe_stride():
    """The tools read a checkpoint's stride; a file that records none (an early fine-tuning file)
    gets its dataset's recipe: FERV39k every frame, the others every 4th, unknown sets 4."""
    assert sampling_rate_of({"sampling_rate": 2, "data_set": "FERV39k"}) == 2
    assert sampling_rate_of({"data_set": "FERV39k"}) == 1
    assert sampling_rate_of({"data_set": "DFEW"}) == 4
    assert sampling_rate_of({"data_set": "no_such_set"}) == sampling_rate_of({}) == 4

"""scripts/dfew/linear_base.sh: linear probing with the recipe of engine/recipes.py spelled out,
the same values run_finetune.py --tuning linear takes by itself."""
import run_finetune
from engine.cli import explicit_options
from engine.recipes import FINETUNE, LINEAR_PROBE, parser_defaults
from engine.tuning import tuning_defaults
from test_scripts_recipes import commands, parse, same


def test_the_linear_probing_script_spells_out_the_recipe():
    cmds = commands("dfew/linear_base.sh", NPROC_PER_NODE="4", SPLITS="split01 split02")
    runs = [c for c in cmds if "run_finetune.py" in c]
    assert len(runs) == 4 and sum("engine.pool_folds" in c for c in cmds) == 1
    for train, ev in zip(runs[0::2], runs[1::2]):
        _, _, a = parse(train)
        assert a["--tuning"] == "linear" and a["--aa"] == ""
        recipe = {**FINETUNE, **LINEAR_PROBE}
        for key, value in parser_defaults(recipe).items():
            assert same(a[f"--{key}"], value), (key, a[f"--{key}"], value)
        assert int(a["--batch_size"]) * 4 * int(a["--update_freq"]) == recipe["total_batch"]
        # what the script spells out is what --tuning linear alone gives
        parser = run_finetune.get_args_parser()
        argv = train[train.index("run_finetune.py") + 1:]
        scripted = parser.parse_args(argv)
        alone = parser.parse_args(["--tuning", "linear"])
        tuning_defaults(alone, explicit_options(parser, ["--tuning", "linear"]))
        for key in LINEAR_PROBE:
            assert getattr(scripted, key) == getattr(alone, key), key
        _, _, e = parse(ev)
        last = f"{a['--output_dir']}/checkpoint-{int(a['--epochs']) - 1}.pth"  # the last epoch's, as the release
        assert e["--eval"] == "True" and e["--finetune"] == last

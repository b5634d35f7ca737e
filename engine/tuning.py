"""run_finetune.py's tuning modes (models/tuning.py): the options, the linear-probing recipe's
defaults, and the model set up for a run."""
from models.tuning import LORA_TARGETS, TUNING_MODES, Tuning, apply_tuning, backbone_reference, parameter_counts

from .cli import UserError
from .recipes import LINEAR_PROBE


def add_tuning_args(p):
    g = p.add_argument_group("tuning modes (docs/tuning.md)")
    g.add_argument("--tuning", default="full", choices=TUNING_MODES,
                   help="full: every weight trains (the paper's recipe); linear: frozen encoder, linear head "
                        "(the linear-probing recipe becomes the default of every option not typed); lora: "
                        "low-rank adapters in the blocks plus the head. linear/lora checkpoints hold only "
                        "what trained, and refer to the --finetune file by path and sha256")
    g.add_argument("--lora_rank", default=8, type=int, help="rank of the adapters")
    g.add_argument("--lora_alpha", default=16.0, type=float, help="adapter scale: alpha / rank")
    g.add_argument("--lora_dropout", default=0.0, type=float, help="dropout on the adapters' input")
    g.add_argument("--lora_targets", default="qkv,proj,fc1,fc2",
                   help=f"layers of each chosen block that get adapters, some of {','.join(LORA_TARGETS)}")
    g.add_argument("--lora_blocks", default="all", help="blocks with adapters: all, or indices and ranges (0-11,18)")
    g.add_argument("--backbone", default=None,
                   help="with --eval of a linear/LoRA checkpoint: where its backbone file is now, if it moved "
                        "from the path the checkpoint records")
    return g


def tuning_defaults(args, given):
    """Linear probing takes its recipe's values (engine/recipes.py) for the options not typed."""
    if getattr(args, "tuning", "full") != "linear" or getattr(args, "eval", False):
        return
    changed = {k: v for k, v in LINEAR_PROBE.items() if k not in given and getattr(args, k) != v}
    for key, value in changed.items():
        setattr(args, key, value)
    if changed:
        print("linear probing recipe: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()))


def check_tuning_args(args):
    if args.tuning == "full" or args.eval:
        return
    if not args.finetune:
        raise UserError(f"--tuning {args.tuning} trains on a frozen pre-trained encoder: give it with --finetune PATH")
    try:
        Tuning.from_args(vars(args))
    except ValueError as e:
        raise UserError(f"--tuning {args.tuning}: {e}") from None


def setup_tuning(model, args):
    """Freeze ``model`` for ``--tuning`` (nothing for full) and say what trains."""
    if args.tuning == "full":
        return model
    try:
        apply_tuning(model, Tuning.from_args(vars(args)), backbone_reference(args.finetune, args.model_key))
    except ValueError as e:
        raise UserError(f"--tuning {args.tuning}: {e}") from None
    trained, total = parameter_counts(model)
    print(f"tuning {args.tuning}: {trained:,} of {total:,} parameters train ({100 * trained / total:.2f}%)")
    return model

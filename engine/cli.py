"""Command-line plumbing shared by the entry points and the tools: user errors, exit statuses,
and which options a user typed (as opposed to defaults)."""
import argparse
import sys

# Exit statuses. 2 is argparse's own for a bad command line; 75 (EX_TEMPFAIL) says "stopped on
# request, rerun to continue", which a SLURM RequeueExit setting or a job script can act on.
EXIT_USER_ERROR = 2
EXIT_REQUEUE = 75


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the module docstring's layout and shows every option's default (an option
    without one says in its help what happens when it is not given)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class UserError(Exception):
    """A mistake the user can fix (a missing file, a wrong option): one ``error:`` line, exit 2."""


class RunError(Exception):
    """The run cannot go on for a reason outside the code (disk full, diverged): ``error:``, exit 1."""


def _user_error_types():
    # Imported here: the tools that need none of these must not pay for importing torch.
    from datasets.annotations import AnnotationError
    from datasets.registry import DatasetSpecError
    from datasets.robust import BadSampleError, TooManyBadSamples
    from datasets.video_io import VideoReadError
    from models.checkpoint import CheckpointMismatchError, CheckpointReadError
    from models.factory import UnknownModelError
    return (UserError, AnnotationError, DatasetSpecError, CheckpointMismatchError, CheckpointReadError,
            BadSampleError, TooManyBadSamples, UnknownModelError, VideoReadError)


def _message(err):
    """The exception's own message; one re-raised from a DataLoader worker carries the worker's
    traceback as its text, of which only the final ``Type: message`` part is for the user."""
    text = str(err)
    marker = f"{type(err).__name__}: "
    if "Original Traceback" in text and marker in text:
        text = text[text.rindex(marker) + len(marker):]
    return text.strip()


def run_entry(main, *args, **kwargs):
    """Call ``main``; user mistakes and run failures become an ``error:`` line and an exit status.

    Anything else is a bug and keeps its traceback.
    """
    from engine.rundir import release_all
    from engine.train_step import NonFiniteLossError
    try:
        return main(*args, **kwargs)
    except _user_error_types() as e:
        print(f"error: {_message(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except (RunError, NonFiniteLossError) as e:
        print(f"error: {_message(e)}", file=sys.stderr, flush=True)
        return 1
    finally:
        release_all()  # the --output_dir lock, whatever the end


def explicit_options(parser, argv=None):
    """The destinations of the options present on the command line ``argv`` (not their defaults)."""
    saved = [(action, action.default) for action in parser._actions]
    saved_defaults = dict(parser._defaults)
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
        parser._defaults.update(saved_defaults)
    return frozenset(vars(given))


def int_list(value):
    """``'12 6 3'`` or ``12,6,3`` → ``[12, 6, 3]`` (a list-valued option in one word)."""
    return [int(v) for v in str(value).replace(",", " ").split()]


def add_model_options(parser):
    """Options of the tools that restate what a checkpoint records (all default to the checkpoint's
    values; one that disagrees is an error unless ``--force_config``)."""
    g = parser.add_argument_group("model and clips (default: what the checkpoint records)")
    g.add_argument("--model", default=None, help="registered model name")
    g.add_argument("--input_size", type=int, default=None, help="clip side in pixels")
    g.add_argument("--num_frames", type=int, default=None, help="frames per clip")
    g.add_argument("--sampling_rate", type=int, default=None, help="frame stride inside a clip")
    g.add_argument("--tubelet_size", type=int, default=None, help="frames per token")
    g.add_argument("--short_side_size", type=int, default=None, help="resize before the centre crop")
    g.add_argument("--stage_depths", type=int_list, default=None, help="e.g. '12 6 3' or 12,6,3")
    g.add_argument("--num_bottleneck_tokens", type=int_list, default=None, help="bottleneck tokens per time step")
    g.add_argument("--embed_dim", type=int, default=None, help="only for models trained with a custom width")
    g.add_argument("--num_heads", type=int, default=None, help="attention heads (with --embed_dim)")
    g.add_argument("--temporal_kernel_size", type=int, default=None, help="time steps merged per pyramid stage")
    g.add_argument("--data_set", default=None, help="registered dataset name (class names), or custom")
    g.add_argument("--nb_classes", type=int, default=None, help="outputs of the classifier")
    g.add_argument("--task", default=None, choices=["classification", "regression", "clip_classification"],
                   help="what the outputs are (the dataset's)")
    g.add_argument("--force_config", action="store_true",
                   help="let these options override what the checkpoint records (a conflict is an error otherwise)")
    g.add_argument("--backbone", default=None,
                   help="a linear/LoRA checkpoint's backbone file, if it moved from the path the checkpoint records")
    return g


def typed_options(args):
    """``{option: value}`` of the model options a tool's user gave (their default is None), with
    ``backbone`` (which ``models.checkpoint.model_from_checkpoint`` reads); ``args`` is a namespace or a dict."""
    from models.checkpoint import CLIP_KEYS, MODEL_KEYS, OUTPUT_KEYS
    from models.factory import PATCH_SIZE
    values = args if isinstance(args, dict) else vars(args)
    # --class_names is checked against what the checkpoint recorded by datasets.registry.output_names.
    keys = tuple(k for k in MODEL_KEYS + CLIP_KEYS + OUTPUT_KEYS if k != "class_names") + ("backbone",)
    typed = {k: v for k, v in values.items() if k in keys and v is not None}
    for key, value in typed.items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in numbers):
            raise UserError(f"--{key} must be at least 1, not {value}")
    if typed.get("input_size", PATCH_SIZE) % PATCH_SIZE:
        raise UserError(f"--input_size {typed['input_size']} is not a multiple of the patch size {PATCH_SIZE}")
    return typed

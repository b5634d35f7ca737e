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
    user_error = True


class RunError(Exception):
    """The run cannot go on for a reason outside the code (disk full, diverged, a stop): ``error:``
    and ``status`` (1 unless said)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # picklable with its status (ranks pass errors on)
        return type(self), (str(self), self.status)


# What the user can do about a library error (models/, datasets/), in this command line's words,
# by the error's ``advice``; each takes the error and returns the whole message.
_FIT = ("pick the matching --model / --input_size / --num_frames / --stage_depths, or check the file with "
        "`python -m tools.model_info --checkpoint`")
_BACKBONE = {
    "missing": lambda e: f"{e}; say where it is now with --backbone PATH",
    "moved_missing": lambda e: f"--backbone {e.path}: no such file",
    "differs": str,
    "other_run": lambda e: f"--finetune {e}",
}
_KIND = {
    "pretrain": "predicting needs a fine-tuned one; for features use python -m tools.extract_features",
    "finetune": "give a pre-training checkpoint",
    "no_classifier": "it cannot predict",
}
ADVICE = {
    "pick_model": lambda e: f"{e}\n  {_FIT}",
    "config_conflict": lambda e: "options that disagree with the checkpoint: " + "; ".join(
        f"--{k} {mine} (the checkpoint records {value})" for k, (mine, value) in e.conflicts.items())
        + ". Drop them (the checkpoint's values are used), or add --force_config to use yours anyway",
    "tuned_checkpoint": lambda e: f"{e}. Evaluate it with --eval, continue it with --resume, or write it as a plain "
                                  f"checkpoint first: python -m tools.merge_lora CHECKPOINT --out FILE",
    "backbone": lambda e: _BACKBONE[e.reason](e),
    "tuning": lambda e: f"{e} " + ("(--tuning full)" if e.mode == "full"
                                   else "(other --lora_rank / --lora_targets / --lora_blocks / classes?)"),
    "checkpoint_kind": lambda e: f"{e}: {_KIND[e.found]}",
    "outputs": lambda e: f"--nb_classes / the checkpoint's args say {e.configured} outputs, but its classifier "
                         f"has {e.found}",
}


def exit_status(err):
    """The exit status of an error that ends in one ``error:`` line, or None for a bug (traceback).

    Library errors declare that they are the user's to fix with ``user_error = True`` (models/ and
    datasets/ do not import this module).
    """
    if isinstance(err, RunError):
        return err.status
    if getattr(err, "user_error", False):
        return EXIT_USER_ERROR
    return None


def message(err):
    """The ``error:`` text: the exception's own message in command-line words; one re-raised from a
    DataLoader worker carries the worker's traceback as its text, of which only the final
    ``Type: message`` part is for the user."""
    advice = ADVICE.get(getattr(err, "advice", None))
    text = advice(err) if advice is not None else str(err)
    marker = f"{type(err).__name__}: "
    if "Original Traceback" in text and marker in text:
        text = text[text.rindex(marker) + len(marker):]
    return text.strip()


# Called by run_entry when ``main`` ends, however it ends; modules that hold something for a run
# (engine.rundir: the --output_dir lock) add to it, so this module imports none of them.
AT_END = []


def run_entry(main, *args, **kwargs):
    """Call ``main``; user mistakes and run failures become an ``error:`` line and an exit status
    (``main``'s own, 0 when it returns None).

    Anything else is a bug and keeps its traceback.
    """
    try:
        status = main(*args, **kwargs)
    except Exception as e:
        status = exit_status(e)
        if status is None:
            raise
        print(f"error: {message(e)}", file=sys.stderr, flush=True)
    finally:
        for release in AT_END:  # e.g. the --output_dir lock (engine.rundir), whatever the end
            release()
    return 0 if status is None else status


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

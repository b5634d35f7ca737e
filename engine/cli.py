"""Command-line plumbing shared by the entry points and the tools: user errors, exit statuses,
and which options a user typed (as opposed to defaults)."""
import argparse
import sys

# Exit statuses. 2 is argparse's own for a bad command line; 75 (EX_TEMPFAIL) says "stopped on
# request, rerun to continue", which a SLURM RequeueExit setting or a job script can act on.
EXIT_USER_ERROR = 2
EXIT_REQUEUE = 75


class UserError(Exception):
    """A mistake the user can fix (a missing file, a wrong option): one ``error:`` line, exit 2."""


class RunError(Exception):
    """The run cannot go on for a reason outside the code (disk full, diverged): ``error:``, exit 1."""


def _user_error_types():
    # Imported here: the tools that need none of these must not pay for importing torch.
    from datasets.annotations import AnnotationError
    from datasets.registry import DatasetSpecError
    from datasets.robust import BadSampleError, TooManyBadSamples
    from models.checkpoint import CheckpointMismatchError, CheckpointReadError
    return (UserError, AnnotationError, DatasetSpecError, CheckpointMismatchError, CheckpointReadError,
            BadSampleError, TooManyBadSamples)


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
    from engine.train_step import NonFiniteLossError
    try:
        return main(*args, **kwargs)
    except _user_error_types() as e:
        print(f"error: {_message(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except (RunError, NonFiniteLossError) as e:
        print(f"error: {_message(e)}", file=sys.stderr, flush=True)
        return 1


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

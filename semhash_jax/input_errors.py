"""Errors caused by the user's input, reported by the binaries as one line.

Checks of the config, the workdir, the data, the lists and the checkpoints raise
ValueError, FileNotFoundError or OSError with a message that names the value and
the fix. Code that only checks input runs inside `tagged()`, which marks such
errors. `main` and `evaluate` print a marked error as "Error: <message>" without a
traceback, which goes to the debug log. Every other error keeps its traceback, so a
bug is never hidden.
"""

import contextlib

from absl import logging

_KINDS = (ValueError, FileNotFoundError, OSError)


@contextlib.contextmanager
def tagged():
    """Mark the input errors raised inside the block."""
    try:
        yield
    except _KINDS as e:
        e.semhash_input_error = True
        raise


def mark(error: BaseException) -> BaseException:
    """Mark `error` as an input error and return it, for `raise input_errors.mark(...)`."""
    error.semhash_input_error = True
    return error


def run(function, *args, **kwargs):
    """Call `function`; end the program with one line if it raises a marked input error."""
    try:
        return function(*args, **kwargs)
    except _KINDS as e:
        if not getattr(e, "semhash_input_error", False):
            raise
        logging.debug("Traceback of the input error:", exc_info=True)
        raise SystemExit(f"Error: {e}") from None

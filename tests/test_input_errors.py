"""Input errors end the binaries with one line; other errors keep their traceback."""

import pytest

from semhash_jax import input_errors


def bad_input():
    with input_errors.tagged():
        raise FileNotFoundError("List file '/x/train.txt' not found.")


def bug():
    raise ValueError("a bug, not an input error")


def test_tagged_error_becomes_one_line():
    with pytest.raises(SystemExit) as exit_info:
        input_errors.run(bad_input)
    assert str(exit_info.value) == "Error: List file '/x/train.txt' not found."


def test_untagged_error_propagates():
    with pytest.raises(ValueError, match="a bug"):
        input_errors.run(bug)


def test_result_passes_through():
    assert input_errors.run(lambda x: x + 1, 2) == 3

"""The one error type for bad data on disk.

It lives in its own module so that every reader (``images``, ``cifar``, ``idx``) can raise it
without importing the others. ``vqlab.data.images`` re-exports it.
"""

from __future__ import annotations

from vqlab.errors import UserError


class DataError(UserError, ValueError):
    """Bad or missing input data. The message is one line naming the path and the problem.

    The CLI turns it into a one-line error on stderr and exit code 2.
    """


class NoSplitError(DataError):
    """The dataset has no folder for the asked split (an image folder that is all 'train')."""


def describe(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, to quote a caught error in a one-line message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__

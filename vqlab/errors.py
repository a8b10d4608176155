"""The errors that bad input raises, in a leaf module that every layer may import.

Every error that bad input raises derives from :class:`UserError`; the CLI catches that one type
and turns it into one line on stderr and exit code 2 (no traceback). Each kind also derives from
the built-in type callers already expect (a bad value is a ``ValueError``, a missing run folder a
``FileNotFoundError``, a missing package an ``ImportError``).
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix: the message is one line naming the problem (exit code 2)."""


class ConfigError(UserError, ValueError):
    """A bad configuration key or value (the CLI turns it into exit code 2)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named is not there, or is not what it should be."""


class OutputError(UserError, ValueError):
    """An ``--out`` that cannot be written without destroying what is there (exit code 2)."""

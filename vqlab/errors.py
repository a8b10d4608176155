"""The errors that bad input raises, in a leaf module that every layer may import.

The CLI turns each into one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration key or value (the CLI turns it into exit code 2)."""

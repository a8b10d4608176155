"""The evaluation package's error for a bad or mismatching feature net (exit code 2 in the CLI)."""

from __future__ import annotations

from vqlab.errors import UserError


class FeatNetError(UserError, ValueError):
    """A feature net folder that is missing, corrupt or does not fit the images (one line)."""

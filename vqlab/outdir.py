"""The one rule for every ``--out``: an existing non-empty folder, or an existing file, is
refused unless ``--overwrite`` is given; nothing on disk changes before the refusal.

Torch-free, so the CLI applies it before its heavy imports. :func:`check_out` only looks;
:func:`clear_out` removes the old output once the new one is computed and about to be written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vqlab.errors import OutputError


def _check_parent(out: Path) -> None:
    """The nearest existing ancestor of ``out`` must be a writable folder."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"--out {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"--out {out}: no permission to write in {parent}")
            return


def check_out(out: str | Path, *, overwrite: bool = False, file: bool = False) -> bool:
    """Refuse ``out`` unless it can be written; returns whether writing replaces something.

    ``file=False``: ``out`` is a folder; an existing file there, or a non-empty folder without
    ``overwrite``, is refused. ``file=True``: ``out`` is one file; an existing folder there, or an
    existing file without ``overwrite``, is refused. Raises :class:`OutputError` (one line).
    """
    out = Path(out)
    _check_parent(out)
    if file:
        if out.is_dir():
            raise OutputError(f"--out {out} is a folder; give the name of a file to write")
        if out.exists() and not overwrite:
            raise OutputError(f"--out {out} exists; pass --overwrite or choose a new file")
        return out.exists()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    full = out.is_dir() and any(out.iterdir())
    if full and not overwrite:
        raise OutputError(f"--out {out} is not empty; pass --overwrite or choose a new folder")
    return full


def clear_out(out: str | Path, *, overwrite: bool = False) -> Path:
    """Check ``out`` again (it may have changed while the work ran), then make it an empty folder
    (the old one removed only with ``overwrite``). Returns it."""
    out = Path(out)
    if check_out(out, overwrite=overwrite):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out

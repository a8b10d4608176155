"""The run folder: config.yaml, command.txt, metrics.jsonl, summary.json (see DESIGN.md).

One writer at a time: :class:`RunWriter` holds an exclusive ``flock`` on ``.lock`` in the run
folder (with the owner's pid in it) from the start or resume of a run until ``close()``, so a
second ``vqlab train --resume`` (or ``--overwrite``) of a folder that another process is still
training is refused instead of interleaving checkpoints and metrics. The kernel drops the lock
when the owner exits, however it exits, so a crashed run's lock is never stale.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import IO, Any

from vqlab.config import RunConfig, save_config
from vqlab.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locking
    fcntl = None

LOCK_FILE = ".lock"


class RunFolderError(UserError, ValueError):
    """The output folder cannot be used (the CLI turns it into exit code 2)."""


def _clean(value: Any) -> Any:
    """JSON-safe scalars: tensors to numbers, NaN/inf to None (strict JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Atomic JSON write: a crash never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in obj.items()}, indent=2))
    os.replace(tmp, path)


def check_out_dir(out: str | Path, *, overwrite: bool = False) -> bool:
    """Raise :class:`RunFolderError` if ``out`` cannot be a new run folder; changes nothing.

    Returns whether ``out`` holds files that ``overwrite`` would remove.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} exists and is not a folder")
    full = out.is_dir() and any(out.iterdir())
    if full and not overwrite:
        raise RunFolderError(f"--out {out} is not empty; pass --overwrite or choose a new folder")
    return full


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``out/.lock``; :class:`RunFolderError` if taken.

    The file keeps the owner's pid for the message. It is released by :meth:`release`, or by
    the kernel when the owning process exits (so it never outlives its owner).
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self._file: IO[str] | None = None
        if fcntl is None:
            return
        f = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise RunFolderError(
                f"{self.path.parent} is in use by another vqlab process (pid {owner}); wait "
                "for it to finish or stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def check_not_in_use(out: str | Path) -> None:
    """Raise :class:`RunFolderError` if another process holds ``out``'s lock; changes nothing."""
    if (Path(out) / LOCK_FILE).is_file():
        FolderLock(out).release()


def prepare_out_dir(out: str | Path, *, overwrite: bool = False) -> Path:
    """Create ``out`` (with ``plots/``); refuse a non-empty folder unless ``overwrite``, and a
    folder that another process is writing to (its lock is held) even then."""
    out = Path(out)
    if check_out_dir(out, overwrite=overwrite):
        check_not_in_use(out)
        shutil.rmtree(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    return out


class RunWriter:
    """Creates the run folder and appends metrics; every line is flushed, so a crash loses none.

    Holds the folder's :class:`FolderLock` until :meth:`close`: a second writer of the same
    folder (another process resuming or overwriting it) gets a :class:`RunFolderError`.
    """

    def __init__(
        self, out: str | Path, *, overwrite: bool = False, _lock: FolderLock | None = None
    ) -> None:
        if _lock is None:
            self.out = prepare_out_dir(out, overwrite=overwrite)
            _lock = FolderLock(self.out)
        else:
            self.out = Path(out)
        self._lock = _lock
        self._metrics = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()

    def start(self, config: RunConfig, command: str | None) -> RunWriter:
        save_config(config, self.out / "config.yaml")
        (self.out / "command.txt").write_text((command or "(python API)") + "\n")
        return self

    @classmethod
    def reopen(
        cls, out: str | Path, step: int, command: str | None, lock: FolderLock | None = None
    ) -> RunWriter:
        """Continue the run folder ``out`` at ``step``: metric rows of ``step`` and later (logged
        after the checkpoint a resume starts from) are dropped, so no step appears twice.
        ``lock``: the folder's lock if the caller took it already (a second ``flock`` of the
        same file in one process would refuse)."""
        out = Path(out)
        lock = lock or FolderLock(out)  # before touching anything another writer may write
        try:
            truncate_metrics(out / "metrics.jsonl", step)
            with open(out / "command.txt", "a") as f:
                f.write(f"(resumed at step {step}) {command or '(python API)'}\n")
            return cls(out, _lock=lock)
        except BaseException:
            lock.release()
            raise

    def log(self, row: dict[str, Any]) -> None:
        self._metrics.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._metrics.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        write_json(self.out / "summary.json", summary)

    def close(self) -> None:
        """Close metrics.jsonl and release the folder's lock."""
        self._metrics.close()
        self._lock.release()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of ``path`` before ``step`` (atomically); a torn last line is dropped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line a crash cut short
                continue
            if isinstance(row, dict) and row.get("step", step) < step:
                rows.append(line + "\n")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

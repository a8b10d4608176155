"""How a data-parallel worker ends: ``distributed.leave`` and the console script under torchrun.

The abort it avoids (gloo's worker threads freeing tensors during interpreter teardown) is a
race and cannot be provoked on demand; these tests pin the mechanism: no interpreter teardown
(an ``atexit`` handler stands for it), the exit code kept, nothing printed lost.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MARK = "interpreter teardown ran"


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    full.update(env)
    prelude = f"import atexit; atexit.register(print, {MARK!r}); "
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def test_leave_keeps_the_code_and_the_unflushed_output_and_skips_teardown():
    done = _python(
        "import sys; from vqlab.training.distributed import leave; "
        "sys.stdout.write('no newline yet'); sys.stderr.write('err too'); leave(3)"
    )
    assert done.returncode == 3
    assert done.stdout == "no newline yet"  # flushed, and the atexit print never ran
    assert done.stderr == "err too"


@pytest.mark.parametrize(("world", "torn_down"), [(None, True), ("1", True), ("2", False)])
def test_console_script_under_torchrun_ends_through_leave(world, torn_down):
    # a usage error (no --out) is answered before any process group exists: exit code 2 either way
    env = {} if world is None else {"WORLD_SIZE": world}
    done = _python(
        "import sys; sys.argv = ['vqlab', 'train']; from vqlab.cli import run; run()", **env
    )
    assert done.returncode == 2
    assert "vqlab: error: Missing option '--out'" in done.stderr
    assert (MARK in done.stdout) is torn_down


def test_console_script_under_torchrun_prints_an_unexpected_error_and_exits_1():
    code = (
        "import sys, vqlab.cli as cli; sys.argv = ['vqlab']; "
        "cli.main = lambda: (_ for _ in ()).throw(RuntimeError('boom in a worker')); cli.run()"
    )
    done = _python(code, WORLD_SIZE="2")
    assert done.returncode == 1
    assert "RuntimeError: boom in a worker" in done.stderr  # the traceback, as Python prints it
    assert MARK not in done.stdout

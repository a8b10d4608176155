"""The run folder's writer: one at a time, refused with one line while another process holds it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vqlab.cli import main
from vqlab.training.logging import LOCK_FILE, RunFolderError, RunWriter

pytest.importorskip("fcntl", reason="the run-folder lock uses POSIX flock")
TINY = str(Path(__file__).parents[2] / "configs" / "tiny.yaml")


def _hold(out: Path) -> subprocess.Popen:
    """Another process that reopens the run folder ``out`` and keeps writing it until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from vqlab.training.logging import RunWriter
        writer = RunWriter.reopen({str(out)!r}, 10**9, "holder")
        print("holding", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_writer_is_refused_until_the_first_process_is_gone(tmp_path):
    out = tmp_path / "run"
    RunWriter(out).close()
    holder = _hold(out)
    try:
        assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)
        with pytest.raises(
            RunFolderError, match=rf"in use by another vqlab process \(pid {holder.pid}\)"
        ):
            RunWriter.reopen(out, 0, "second")
        with pytest.raises(RunFolderError, match="in use"):
            RunWriter(out, overwrite=True)  # nor may --overwrite delete it under the holder
        assert (out / "metrics.jsonl").is_file()
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its owner: nothing stale is left to clean up
    RunWriter.reopen(out, 0, "third").close()


def test_the_lock_is_released_on_close_in_the_same_process(tmp_path):
    first = RunWriter(tmp_path / "run")
    with pytest.raises(RunFolderError, match="in use"):
        RunWriter.reopen(tmp_path / "run", 0, "second")
    first.close()
    RunWriter.reopen(tmp_path / "run", 0, "second").close()


def test_resume_of_a_run_another_process_is_writing_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    (out / "summary.json").unlink()  # as if the first process were still at it
    before = (out / "metrics.jsonl").read_text()
    holder = _hold(out)
    try:
        assert main(["train", "--resume", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0], err
        assert (out / "metrics.jsonl").read_text() == before  # nothing was touched
    finally:
        holder.kill()
        holder.wait()

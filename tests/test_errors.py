"""One base class for user errors: each kind derives from it (and from the built-in type callers
expect), and the CLI turns any of them, a new one included, into one line and exit code 2."""

import pytest

from vqlab.cli import UsageError, main
from vqlab.data.errors import DataError, NoSplitError
from vqlab.errors import ConfigError, MissingFileError, UserError
from vqlab.evaluation.errors import FeatNetError
from vqlab.models.checkpoint import CheckpointError
from vqlab.priors.tokens import TokenFileError
from vqlab.quantizers.peer import MissingDependency
from vqlab.tokenizer import TokenizerError
from vqlab.training.logging import RunFolderError


@pytest.mark.parametrize(
    ("kind", "builtin"),
    [
        (ConfigError, ValueError),
        (MissingFileError, FileNotFoundError),
        (DataError, ValueError),
        (NoSplitError, ValueError),
        (FeatNetError, ValueError),
        (CheckpointError, ValueError),
        (TokenFileError, ValueError),
        (MissingDependency, ImportError),
        (TokenizerError, ValueError),
        (RunFolderError, ValueError),
        (UsageError, ValueError),
    ],
)
def test_every_user_error_is_one_type_and_keeps_its_builtin_base(kind, builtin):
    assert issubclass(kind, UserError) and issubclass(kind, builtin)


def _raising(error):
    def run(*args, **kwargs):
        raise error

    return run


def test_the_cli_turns_any_user_error_into_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    class Brand(UserError):
        """A kind of bad input the CLI has never heard of."""

    monkeypatch.setattr("vqlab.runs.diagnose.diagnose_run", _raising(Brand("bad thing\nhere")))
    assert main(["diagnose", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "vqlab: error: bad thing here\n"


def test_a_bug_is_not_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr("vqlab.runs.diagnose.diagnose_run", _raising(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        main(["diagnose", str(tmp_path), "--out", str(tmp_path / "o")])


def test_a_missing_run_folder_is_a_user_error(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    # answered by the CLI's own check, before the heavy imports (issue 25)
    assert err.startswith("vqlab: error: RUN ") and "nope: no such file" in err
    assert err.count("\n") == 1

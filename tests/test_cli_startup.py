"""The CLI answers bad arguments before its heavy imports (issue 25), and its light copies of
the heavy modules' names stay equal to them."""

from __future__ import annotations

import subprocess
import sys

import pytest

BAD = [
    ["frobnicate"],
    ["sample", "/no/such/run", "--n", "2", "--out", "/tmp/x"],
    ["sample", "RUN", "--n", "0", "--out", "/tmp/x"],
    ["train", "--out", "OUT", "--set", "vq.codebok_size=8"],
    ["train", "--out", "OUT", "--set", "train.steps=many"],
    ["replicate", "nonsense", "--out", "/tmp/x"],
    ["tokenize", "/no/such/run", "--data", "/no/data", "--out", "t.npz"],
    ["evaluate", "RUN", "--data", "D", "--featnet", "F", "--out", "O", "--limit", "-1"],
    ["fd", "/no/real", "/no/fake", "--featnet", "F"],
    ["featnet", "train", "--data", "/no/data", "--out", "O"],
    ["diagnose", "/no/run", "--out", "O"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a[:2]) + f"-{i}" for i, a in enumerate(BAD)])
def test_a_bad_argument_is_answered_before_torch_matplotlib_or_the_experiments(argv, tmp_path):
    code = (
        "import sys\nfrom vqlab.cli import main\n"
        f"rc = main({argv!r})\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'vqlab.experiments') if m in sys.modules]\n"
        "assert rc == 2, rc\nassert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqlab: error: "), done.stderr


def test_the_light_names_are_the_heavy_ones():
    import vqlab
    from vqlab import cli
    from vqlab.experiments.replications import EXPERIMENTS

    assert cli.EXPERIMENT_NAMES == tuple(EXPERIMENTS)
    assert vqlab.__all__ == sorted(vqlab._PUBLIC)
    for name in vqlab.__all__:  # each resolves, and to the object its module defines
        assert getattr(vqlab, name) is getattr(sys.modules[vqlab._PUBLIC[name]], name)
    with pytest.raises(AttributeError):
        vqlab.no_such_name  # noqa: B018

"""The example loops of DeferredQuantizer (examples/) at toy size: standard and deferred, three
changed lines apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
TINY = str(ROOT / "configs" / "tiny.yaml")
sys.path.insert(0, str(EXAMPLES))

pytest.importorskip("vector_quantize_pytorch")


@pytest.mark.parametrize("name", ["taming_vqvae", "vqtorch_model"])
def test_loop_runs_standard_and_deferred(name, tmp_path):
    module = __import__(name)
    argv = ["--config", TINY, "--set", "train.steps=40", "--set", "train.pretrain_steps=20"]
    standard = module.main([*argv, "--out", str(tmp_path / "s.json")])
    deferred = module.main([*argv, "--deferred", "--out", str(tmp_path / "d.json")])
    for m in (standard, deferred):
        assert 0 < m["usage"] <= 1 and 1 <= m["perplexity"] <= 16 and m["codebook_size"] == 16
    assert deferred["strategy"] == "deferred-plugin" and (tmp_path / "d.json").is_file()


@pytest.mark.parametrize("name", ["taming_vqvae.py", "vqtorch_model.py"])
def test_three_lines_turn_standard_into_deferred(name):
    source = (EXAMPLES / name).read_text()
    marked = [
        ln for ln in source.splitlines() if ln.rstrip().split("  # noqa")[0].endswith("# plug-in")
    ]
    assert len(marked) == 3
    assert "training.engine" not in source and "from vqlab import train" not in source
    common = (EXAMPLES / "common.py").read_text()
    assert "engine" not in common.split('"""')[2]  # the loops never import vqlab's engine

"""The README's "Your own tokenizer" section: every python snippet runs, in order, and its
command that diagnoses the checkpoint the first snippet saved runs too."""

import json
import re
import shlex
from pathlib import Path

import pytest

from vqlab.cli import main

ROOT = Path(__file__).parents[2]
pytest.importorskip("vector_quantize_pytorch")


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Your own tokenizer")
    return text[start : text.index("\n## ", start + 3)]


def test_own_tokenizer_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    section = _section()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "my-diag-py" / "report.md").is_file()
    bash = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    first = bash.splitlines()[0].split("#")[0]
    argv = shlex.split(first)
    assert argv[:2] == ["vqlab", "diagnose"]
    assert main(argv[1:]) in (0, None)
    report = json.loads((tmp_path / "my-diag" / "diagnostics.json").read_text())
    assert "quantizer._codebook.embed" in report["codebook_source"]

"""``vqlab diagnose --codebook``: a tiny checkpoint in each layout, the verdicts, and bad input
(a pickle payload, a missing KEY, NaN codes, ids >= K, ids of another K): one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vqlab import VectorQuantizer
from vqlab.cli import main
from vqlab.diagnostics.checkpoint import CodebookError, load_codebook
from vqlab.quantizers.distance import nearest_code
from vqlab.runs.diagnose_codebook import diagnose_codebook

K, D = 16, 8


def _mixture(n: int = 400, seed: int = 0) -> torch.Tensor:
    """(n, 4, D) latents: 4 positions per sample, drawn around 16 spread-out centres."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=gen) * 4
    pick = torch.randint(K, (n * 4,), generator=gen)
    return (centres[pick] + 0.1 * torch.randn(n * 4, D, generator=gen)).reshape(n, 4, D)


def test_each_layout_is_found_and_named(tmp_path):
    vqp = pytest.importorskip("vector_quantize_pytorch")
    book = torch.randn(K, D)
    torch.save({"state_dict": {"quantize.embedding.weight": book, "decoder.w": torch.randn(3, 3),
                               "transformer.pos_embedding.weight": torch.randn(4, D)},
                "epoch": 3}, tmp_path / "taming.ckpt")  # fmt: skip
    peer = vqp.VectorQuantize(dim=D, codebook_size=K)
    torch.save(peer.state_dict(), tmp_path / "peer.pt")
    heads = vqp.VectorQuantize(dim=D, codebook_size=K, heads=2, separate_codebook_per_head=True)
    torch.save({"model": heads.state_dict()}, tmp_path / "heads.pth")
    ours = VectorQuantizer(D, K)
    save_file({f"quantizer.{k}": v for k, v in ours.state_dict().items()},
              str(tmp_path / "vqlab.safetensors"))  # fmt: skip
    np.save(tmp_path / "codes.npy", book.numpy())
    found = {name: load_codebook(tmp_path / name) for name in
             ("taming.ckpt", "peer.pt", "heads.pth", "vqlab.safetensors", "codes.npy")}  # fmt: skip
    assert torch.equal(found["taming.ckpt"].codes, book)
    assert "state_dict.quantize.embedding.weight (nn.Embedding" in found["taming.ckpt"].source
    assert torch.equal(found["peer.pt"].codes, peer._codebook.embed[0])
    assert "_codebook.embed (vector-quantize-pytorch" in found["peer.pt"].source
    assert torch.equal(found["heads.pth"].codes, heads._codebook.embed[0])
    assert "head 0 of 2" in found["heads.pth"].source
    assert torch.equal(found["vqlab.safetensors"].codes, ours.codebook)
    assert torch.equal(found["codes.npy"].codes, book)


def _healthy(tmp_path: Path) -> tuple[Path, Path, Path]:
    z = _mixture()
    flat = z.reshape(-1, D)
    gen = torch.Generator().manual_seed(1)
    codes = flat[torch.randperm(flat.shape[0], generator=gen)[:K]]  # rows of the data
    from vqlab import kmeans

    codes = kmeans(flat, K, iters=10, seed=0).centroids
    ids = nearest_code(flat, codes).indices.reshape(-1, 4)
    torch.save({"quantize.embedding.weight": codes}, tmp_path / "healthy.pt")
    np.save(tmp_path / "z.npy", z.numpy())
    np.savez(tmp_path / "ids.npz", ids=ids.numpy())
    return tmp_path / "healthy.pt", tmp_path / "ids.npz", tmp_path / "z.npy"


def test_healthy_and_collapsed_verdicts(tmp_path):
    book, ids, z = _healthy(tmp_path)
    good = diagnose_codebook(book, tmp_path / "good", ids=ids, latents=z)
    assert good["tokens_collapse"] is False and good["usage"] == 1.0
    assert good["dimensional_collapse"] is False
    assert "quantize.embedding.weight" in good["codebook_source"]
    report = (tmp_path / "good" / "report.md").read_text()
    assert report.split("\n\n")[1].startswith("**Tokens collapse: absent**")
    assert (tmp_path / "good" / "plots" / "codebook.png").is_file()
    # collapsed: codes in a tiny ball at one end of the data, spanning 2 of 8 dimensions
    gen = torch.Generator().manual_seed(2)
    small = torch.zeros(K, D)
    small[:, :2] = 0.01 * torch.randn(K, 2, generator=gen)
    torch.save({"quantize.embedding.weight": small}, tmp_path / "bad.pt")
    bad = diagnose_codebook(tmp_path / "bad.pt", tmp_path / "bad", latents=z)  # ids from z
    assert bad["tokens_collapse"] is True and bad["coverage_ratio"] < 0.5
    assert bad["dimensional_collapse"] is True and bad["codebook_effective_rank"] <= 2.0
    assert bad["indices_from"] == "nearest codes of the latents"
    assert "latents" not in bad["left_out"] and "labels" in bad["left_out"]


def test_codebook_alone_says_what_is_left_out(tmp_path):
    book, _, _ = _healthy(tmp_path)
    only = diagnose_codebook(book, tmp_path / "only")
    assert only["tokens_collapse"] is None and "usage" not in only
    assert set(only["left_out"]) == {"ids", "latents", "labels", "inputs"}
    assert "codebook_effective_rank" in only and only["codebook_rank_cap"] == D


def test_ids_alone_decide_a_collapse_by_usage(tmp_path):
    book, _, _ = _healthy(tmp_path)
    np.save(tmp_path / "few.npy", np.zeros((50, 4), dtype=np.int64))  # one code for everything
    out = diagnose_codebook(book, tmp_path / "few", ids=tmp_path / "few.npy")
    assert out["tokens_collapse"] is True and out["usage"] == 1 / K
    assert "coverage ratio" in out["left_out"]["latents"]


def test_labels_enable_the_per_class_measures(tmp_path):
    book, ids, z = _healthy(tmp_path)
    np.save(tmp_path / "y.npy", np.arange(400) % 3)
    out = diagnose_codebook(book, tmp_path / "y", ids=ids, latents=z, labels=tmp_path / "y.npy")
    assert {"modes_with_tokens", "class_separation", "probe_accuracy"} <= set(out)


class Payload:
    """Unpickling this would create a file: the proof that pickled code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _bad_files(tmp: Path) -> None:
    torch.save({"quantize.embedding.weight": torch.randn(K, D), "x": Payload(tmp / "RAN")},
               tmp / "evil.pt")  # fmt: skip
    torch.save({"a.quantize.embedding.weight": torch.randn(K, D),
                "b.quantize.embedding.weight": torch.randn(K, D)}, tmp / "two.pt")  # fmt: skip
    nan = torch.randn(K, D)
    nan[3, 1] = float("nan")
    torch.save({"quantize.embedding.weight": nan}, tmp / "nan.pt")
    torch.save({"quantize.embedding.weight": torch.randn(K, D)}, tmp / "ok.pt")
    np.save(tmp / "big_ids.npy", np.full((4, 2), K, dtype=np.int64))
    np.savez(tmp / "tokens.npz", test_ids=np.zeros((4, 2), np.int32), codebook_size=np.int64(32))


BAD = [
    (["--codebook", "{t}/evil.pt"], "refused to load: it holds pickled objects"),
    (
        ["--codebook", "{t}/ok.pt:quantize.nope"],
        "no tensor 'quantize.nope'; candidates: quantize.embedding.weight",
    ),  # fmt: skip
    (
        ["--codebook", "{t}/two.pt"],
        "several codebooks: a.quantize.embedding.weight, "
        "b.quantize.embedding.weight; give FILE:KEY",
    ),  # fmt: skip
    (["--codebook", "{t}/nan.pt"], "has 1 NaN or infinite values"),
    (
        ["--codebook", "{t}/ok.pt", "--ids", "{t}/big_ids.npy"],
        "ids lie in [16, 16] but the codebook has K=16",
    ),  # fmt: skip
    (
        ["--codebook", "{t}/ok.pt", "--ids", "{t}/tokens.npz"],
        "ids of a K=32 tokenizer but the codebook has K=16",
    ),  # fmt: skip
    (["--codebook", "{t}/missing.pt"], "no such file"),
    (["{t}", "--codebook", "{t}/ok.pt"], "give a run folder or --codebook"),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    _bad_files(tmp_path)
    argv = ["diagnose", *[a.replace("{t}", str(tmp_path)) for a in argv], "--out",
            str(tmp_path / "out")]  # fmt: skip
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vqlab: error: "), err
    assert fragment in lines[0], lines[0]
    assert not (tmp_path / "RAN").exists()  # the payload never ran
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_command_writes_the_report(tmp_path, capsys):
    book, ids, z = _healthy(tmp_path)
    code = main(["diagnose", "--codebook", f"{book}:quantize.embedding.weight", "--ids", str(ids),
                 "--latents", str(z), "--out", str(tmp_path / "cli")])  # fmt: skip
    assert code in (0, None)
    data = json.loads((tmp_path / "cli" / "diagnostics.json").read_text())
    assert data["tokens_collapse"] is False and "(given)" in data["codebook_source"]
    with pytest.raises(CodebookError):
        load_codebook(tmp_path / "nothing.pt")

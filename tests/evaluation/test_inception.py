"""``--inception FILE``: the file checks, the missing-package line and the loader's errors.

Real Inception weights cannot be downloaded here; a stand-in torch_fidelity module checks the
wiring, and real ``torch.load`` errors check the bad-file branch.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from vqlab.data.images import to_tensor
from vqlab.evaluation import FeatNetError
from vqlab.evaluation.inception import WEIGHTS_BYTES, load_inception
from vqlab.quantizers.peer import MissingDependency


def _right_size_file(tmp_path: Path) -> Path:
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with open(path, "wb") as f:
        f.truncate(WEIGHTS_BYTES)  # sparse: no 95 MB written
    return path


def _fake_fidelity(monkeypatch: pytest.MonkeyPatch, extractor: type) -> None:
    pkg = types.ModuleType("torch_fidelity")
    mod = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    mod.FeatureExtractorInceptionV3 = extractor
    monkeypatch.setitem(sys.modules, "torch_fidelity", pkg)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", mod)


def test_missing_or_wrong_size_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FeatNetError, match="no such file"):
        load_inception(tmp_path / "nope.pth")
    (tmp_path / "small.pth").write_bytes(b"x" * 10)
    with pytest.raises(FeatNetError, match="not the 95,628,359-byte"):
        load_inception(tmp_path / "small.pth")


def test_missing_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails, installed or not
    with pytest.raises(MissingDependency, match=r"pip install 'vqlab\[inception\]'"):
        load_inception(_right_size_file(tmp_path))


def test_a_file_the_loader_cannot_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Loads(torch.nn.Module):  # reads the file as torch-fidelity does
        def __init__(self, name, features_list, feature_extractor_weights_path=None):
            super().__init__()
            torch.load(feature_extractor_weights_path, weights_only=True)

    _fake_fidelity(monkeypatch, Loads)
    with pytest.raises(FeatNetError, match="cannot load the weights") as err:
        load_inception(_right_size_file(tmp_path))
    assert "\n" not in str(err.value)


def test_features_reach_the_extractor_as_the_original_uint8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    class Echo(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None):
            super().__init__()
            assert features_list == ["2048"]

        def forward(self, x):
            seen.append(x)
            return (x.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048],)

    _fake_fidelity(monkeypatch, Echo)
    net = load_inception(_right_size_file(tmp_path))
    images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8).numpy()
    assert net.features(to_tensor(images)).shape == (2, 2048)
    assert seen[0].dtype == torch.uint8
    assert torch.equal(seen[0], torch.from_numpy(images).permute(0, 3, 1, 2))

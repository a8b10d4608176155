"""The one --out rule, --device's spelling and existence, the data-kind reader, the prior's
memory estimates and plot_tokens' per-position labels (issue 25)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vqlab import memory
from vqlab.data.detect import detect_data_name
from vqlab.devices import check_device_name, resolve_device
from vqlab.errors import ConfigError, OutputError
from vqlab.outdir import check_out, clear_out


def test_out_folder_rule(tmp_path):
    assert check_out(tmp_path / "new") is False and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty") is False
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(OutputError, match="is not empty; pass --overwrite"):
        check_out(tmp_path / "full")
    assert check_out(tmp_path / "full", overwrite=True) is True
    (tmp_path / "file").write_text("keep")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_out(tmp_path / "file", overwrite=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_out(tmp_path / "file" / "below")
    assert (tmp_path / "full" / "x").read_text() == "keep"  # looking changed nothing
    clear_out(tmp_path / "full", overwrite=True)
    assert list((tmp_path / "full").iterdir()) == []


def test_out_file_rule(tmp_path):
    target = tmp_path / "t.npz"
    assert check_out(target, file=True) is False
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        check_out(target, file=True)
    assert check_out(target, file=True, overwrite=True) is True
    with pytest.raises(OutputError, match="is a folder"):
        check_out(tmp_path, file=True, overwrite=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_out(target / "x.npz", file=True)


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("cpu", ("cpu", None)),
        ("cuda", ("cuda", None)),
        ("cuda:3", ("cuda", 3)),
        (" cpu", ("cpu", None)),
        ("auto", ("auto", None)),
    ],
)
def test_device_spellings(name, parsed):
    assert check_device_name(name) == parsed


@given(st.text(max_size=12))
def test_any_device_text_parses_or_is_one_config_error(text):
    try:
        kind, index = check_device_name(text)
    except ConfigError as err:
        assert "\n" not in str(err) and "not a device" in str(err)
    else:
        assert kind in ("cpu", "cuda", "auto") and (index is None or index >= 0)
        assert index is None or kind == "cuda"


def test_devices_this_machine_lacks(monkeypatch):
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a device"):
        check_device_name("auto:1")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="there is no GPU 2; this machine has 2"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_data_kind_from_the_layout(tmp_path):
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    assert detect_data_name(tmp_path / "cifar") == "cifar10"
    assert detect_data_name(tmp_path / "cifar" / "cifar-10-batches-py") == "cifar10"
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "train.zip").write_bytes(b"x")
    assert detect_data_name(tmp_path / "zips") == "cifar10"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"x")
    assert detect_data_name(tmp_path / "mnist") == "idx"
    assert detect_data_name(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") == "idx"
    (tmp_path / "pics" / "cat").mkdir(parents=True)
    assert detect_data_name(tmp_path / "pics") == "image_folder"
    (tmp_path / "a.zip").write_bytes(b"x")
    assert detect_data_name(tmp_path / "a.zip") == "image_folder"
    (tmp_path / "notes.txt").write_text("x")
    assert detect_data_name(tmp_path / "notes.txt") is None
    assert detect_data_name(tmp_path / "missing") is None


def test_prior_parameters_bound_the_real_priors():
    from vqlab.priors.maskgit import MaskGIT
    from vqlab.priors.var import VAR

    for k, classes, width, depth in ((16, 0, 32, 1), (64, 10, 64, 2)):
        real = sum(p.numel() for p in MaskGIT(k, 16, classes, depth, width, 4, 0.0).parameters())
        bound = memory.prior_parameters(k, 16, classes, width, depth)
        assert real <= bound <= 2 * real, (real, bound)
        real = sum(
            p.numel() for p in VAR(k, (1, 2, 3), 4, classes, depth, width, 4, 0.0).parameters()
        )
        assert real <= memory.prior_parameters(k, 14, classes, width, depth)


def test_prior_sampling_and_feature_memory_refusals(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10**9)
    # width 32, depth 1, K=16, L=16, 2 classes, by hand: 32*(32+2+32+4) + 3*32^2 + 18*32^2 + 16*32
    assert memory.prior_parameters(16, 16, 2, 32, 1) == 32 * 70 + 3 * 1024 + 18 * 1024 + 16 * 32
    need = memory.check_prior_memory(16, 16, 2, 32, 1, "cpu")
    assert need == 16 * memory.prior_parameters(16, 16, 2, 32, 1)
    with pytest.raises(ConfigError, match="10000000000001 classes"):
        memory.check_prior_memory(16, 16, 10**13 + 1, 32, 1, "cpu")
    with pytest.raises(ConfigError, match="lower --n"):
        memory.check_sampling_memory(10**9, 16, 16, 256, False, "cpu")
    assert memory.check_sampling_memory(10, 16, 16, 256, True, "cpu") == 2 * (
        16 * 10 * 16 + 4 * 10 * 16 * 16
    )
    with pytest.raises(ConfigError, match="score fewer images"):
        memory.check_feature_memory(10**8, 10**8, 128)


def test_plot_tokens_labels_per_position():
    from vqlab.reports.plots import position_labels

    labels = np.array([0, 1, 2])
    assert position_labels(labels, 3) is labels
    assert position_labels(labels, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert position_labels(labels, 7) is None and position_labels(None, 5) is None


def test_plot_tokens_draws_an_image_runs_samples(tmp_path):
    from vqlab.reports.plots import plot_tokens

    rng = np.random.default_rng(0)
    n, positions = 6, 16  # six images of a 4x4 latent grid
    np.savez(
        tmp_path / "s.npz",
        x=rng.normal(size=(n, 48)),
        recon=rng.normal(size=(n, 48)),
        z_e=rng.normal(size=(n * positions, 4)),
        codebook=rng.normal(size=(8, 4)),
        labels=np.arange(n) % 2,
        indices=rng.integers(0, 8, n * positions),
    )
    out = plot_tokens({"standard": tmp_path / "s.npz"}, tmp_path / "tokens.png")
    assert out.stat().st_size > 0

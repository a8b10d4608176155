"""Real Inception-v3 features (FID), from a weights file the user brings.

The standard FID weights (``pt_inception-2015-12-05-6726825d.pth``) are not shipped in any
wheel and cannot be downloaded here, so ``vqlab fd --inception FILE`` takes the file and loads
it through torch-fidelity's ``FeatureExtractorInceptionV3`` (the network torchmetrics' FID
uses), installed by ``pip install 'vqlab[inception]'``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vqlab.evaluation.errors import FeatNetError
from vqlab.evaluation.featnet import sha256_file
from vqlab.quantizers.peer import MissingDependency

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_BYTES = 95_628_359


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features (2048-d) behind the feature net's interface.

    features(x): (B, 3, H, W) float in [-1, 1] -> (B, 2048); the images go back to uint8
    (exactly, for images that came from uint8) and torch-fidelity resizes them to 299.
    """

    in_channels = 3
    num_features = 2048

    def __init__(self, extractor: nn.Module, sha256: str) -> None:
        super().__init__()
        self.extractor = extractor
        self.info = {"name": "inception-v3-compat", "sha256": sha256}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        images = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return self.extractor(images)[0].reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_inception(path: str | Path) -> InceptionFeatures:
    """Inception-v3 from the FID weights file ``path`` (frozen, eval mode).

    Raises FeatNetError for a missing file or one of the wrong size, MissingDependency (saying
    ``pip install 'vqlab[inception]'``) when torch-fidelity is not installed, and FeatNetError
    when torch-fidelity cannot load the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FeatNetError(f"--inception {p}: no such file (want {WEIGHTS_NAME})")
    if p.stat().st_size != WEIGHTS_BYTES:
        raise FeatNetError(
            f"--inception {p}: {p.stat().st_size} bytes, not the {WEIGHTS_BYTES:,}-byte "
            f"{WEIGHTS_NAME}"
        )
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise MissingDependency(
            "--inception needs torch-fidelity: pip install 'vqlab[inception]'"
        ) from None
    try:
        extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(p)
        )
    except Exception as err:  # torch.load and load_state_dict raise many kinds
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FeatNetError(f"--inception {p}: cannot load the weights ({first})") from None
    extractor.eval().requires_grad_(False)
    return InceptionFeatures(extractor, sha256_file(p))

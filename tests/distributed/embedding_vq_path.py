"""The test layout of the nn.Embedding quantizer (tests/quantizers/embedding_vq.py), importable
from the spawned DDP workers, whose sys.path holds this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "quantizers"))

from embedding_vq import EmbeddingVQ  # noqa: E402

__all__ = ["EmbeddingVQ"]

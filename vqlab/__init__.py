"""vqlab: vector-quantized tokenizers that do not collapse, and the diagnostics that show it.

Glossary (used throughout the package):

- ``B`` batch size, ``N`` number of vectors (positions) being quantized, ``D`` code dimension
  (``dim``), ``K`` number of codes (``codebook_size``).
- ``z_e``: encoder output; ``z_q``: its quantized value; ``indices``: the chosen codes.
- standard ("early") quantization: VQ from step 0, codebook k-means-initialised on the untrained
  encoder. deferred quantization: plain autoencoder first, k-means on the trained encoder, then VQ.

The public names below are imported on first use (PEP 562), not with the package: the ``vqlab``
command imports this package first, and a mistyped argument should be answered before torch
loads (issue 25: seconds on a loaded machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "RunConfig": "vqlab.config",
    "load_config": "vqlab.config",
    "diagnose": "vqlab.diagnostics",
    "DeferredQuantizer": "vqlab.quantizers.deferred",
    "init_codebook_": "vqlab.quantizers.deferred",
    "nearest_code": "vqlab.quantizers.distance",
    "KMeansResult": "vqlab.quantizers.kmeans",
    "kmeans": "vqlab.quantizers.kmeans",
    "VectorQuantizer": "vqlab.quantizers.vq",
    "VQOutput": "vqlab.quantizers.vq",
    "Tokenizer": "vqlab.tokenizer",
    "train": "vqlab.training.engine",
}

__all__ = [  # the keys of _PUBLIC (tests/test_cli_startup.py), spelled out for linters
    "DeferredQuantizer",
    "KMeansResult",
    "RunConfig",
    "Tokenizer",
    "VQOutput",
    "VectorQuantizer",
    "diagnose",
    "init_codebook_",
    "kmeans",
    "load_config",
    "nearest_code",
    "train",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below imports lazily
    from vqlab.config import RunConfig, load_config
    from vqlab.diagnostics import diagnose
    from vqlab.quantizers.deferred import DeferredQuantizer, init_codebook_
    from vqlab.quantizers.distance import nearest_code
    from vqlab.quantizers.kmeans import KMeansResult, kmeans
    from vqlab.quantizers.vq import VectorQuantizer, VQOutput
    from vqlab.tokenizer import Tokenizer
    from vqlab.training.engine import train


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'vqlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})

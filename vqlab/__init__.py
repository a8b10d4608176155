"""vqlab: vector-quantized tokenizers that do not collapse, and the diagnostics that show it.

Glossary (used throughout the package):

- ``B`` batch size, ``N`` number of vectors (positions) being quantized, ``D`` code dimension
  (``dim``), ``K`` number of codes (``codebook_size``).
- ``z_e``: encoder output; ``z_q``: its quantized value; ``indices``: the chosen codes.
- standard ("early") quantization: VQ from step 0, codebook k-means-initialised on the untrained
  encoder. deferred quantization: plain autoencoder first, k-means on the trained encoder, then VQ.
"""

from vqlab.config import RunConfig, load_config
from vqlab.diagnostics import diagnose
from vqlab.quantizers.deferred import DeferredQuantizer, init_codebook_
from vqlab.quantizers.distance import nearest_code
from vqlab.quantizers.kmeans import KMeansResult, kmeans
from vqlab.quantizers.vq import VectorQuantizer, VQOutput
from vqlab.tokenizer import Tokenizer
from vqlab.training.engine import train

__version__ = "0.1.0"

__all__ = [
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

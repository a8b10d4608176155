"""Vector quantizers, k-means and the memory-bounded nearest-code search.

Importing the package registers every built-in ``vq.kind`` in :data:`QUANTIZERS`
(:mod:`vqlab.registry`): each layer's module registers itself when it is imported here.
"""

# the kinds register in import order, which is the order error messages list them in
from vqlab.quantizers.multiscale import MultiScaleQuantizer
from vqlab.quantizers.vq import VectorQuantizer, VQOutput, fit_codes

# isort: split
from vqlab.quantizers.distance import NearestCode, nearest_code
from vqlab.quantizers.ema import EmaState, batch_statistics, ema_update, laplace_smooth
from vqlab.quantizers.fsq import FSQ
from vqlab.quantizers.gmm import GMMResult, fit_gmm
from vqlab.quantizers.kmeans import KMeansResult, kmeans, kmeans_parallel, kmeans_plusplus
from vqlab.quantizers.kmeans_stream import ReservoirSampler
from vqlab.quantizers.lfq import LFQ
from vqlab.quantizers.rotation import rotate_to, rotation_trick, straight_through
from vqlab.registry import QUANTIZERS

__all__ = [
    "FSQ",
    "LFQ",
    "QUANTIZERS",
    "EmaState",
    "MultiScaleQuantizer",
    "GMMResult",
    "KMeansResult",
    "NearestCode",
    "ReservoirSampler",
    "VQOutput",
    "VectorQuantizer",
    "batch_statistics",
    "ema_update",
    "fit_codes",
    "fit_gmm",
    "kmeans",
    "kmeans_parallel",
    "kmeans_plusplus",
    "laplace_smooth",
    "nearest_code",
    "rotate_to",
    "rotation_trick",
    "straight_through",
]

"""Diagnostics: pure functions of tensors that measure codebook usage, spread and collapse.

They never log and never train. :func:`diagnose` gathers them under the metric names of the
design contract (``perplexity``, ``usage``, ``codebook_mean_l2``, ...).
"""

from vqlab.diagnostics.collapse import (
    class_separation,
    effective_dim,
    effective_rank,
    mode_stats,
    modes_in_recon,
    probe_accuracy,
    recon_mode_accuracy,
    stratified_split,
)
from vqlab.diagnostics.diagnose import diagnose
from vqlab.diagnostics.spread import (
    mean_nearest_distance,
    mean_pairwise_cos_dist,
    mean_pairwise_l2,
)
from vqlab.diagnostics.usage import code_counts, dead_codes, perplexity, usage

__all__ = [
    "class_separation",
    "code_counts",
    "dead_codes",
    "diagnose",
    "effective_dim",
    "effective_rank",
    "mean_nearest_distance",
    "mean_pairwise_cos_dist",
    "mean_pairwise_l2",
    "mode_stats",
    "modes_in_recon",
    "perplexity",
    "probe_accuracy",
    "recon_mode_accuracy",
    "stratified_split",
    "usage",
]

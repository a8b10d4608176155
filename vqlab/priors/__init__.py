"""Generative priors over tokenizer ids: the token file, MaskGIT (schedules, iterative
decoding) and VAR (next-scale prediction, KV-cached sampling).

Importing the package registers every built-in ``prior.kind`` in :data:`PRIORS`
(:mod:`vqlab.registry`), beside each prior's sampler.
"""

from vqlab.priors.maskgit import MaskGIT, MaskGITLoss, evaluate_prior, maskgit_loss
from vqlab.priors.sampling import maskgit_sample
from vqlab.priors.schedules import SCHEDULES, gamma, get_schedule, mask_count
from vqlab.priors.tokens import TokenData, TokenFileError, load_tokens, save_tokens
from vqlab.priors.var import VAR, VARLoss, block_causal_mask, evaluate_var, var_loss
from vqlab.priors.var_sampling import filter_logits, var_logits_stepwise, var_sample
from vqlab.registry import PRIORS

__all__ = [
    "PRIORS",
    "VAR",
    "VARLoss",
    "block_causal_mask",
    "evaluate_var",
    "filter_logits",
    "var_logits_stepwise",
    "var_loss",
    "var_sample",
    "SCHEDULES",
    "MaskGIT",
    "MaskGITLoss",
    "TokenData",
    "TokenFileError",
    "evaluate_prior",
    "gamma",
    "get_schedule",
    "load_tokens",
    "mask_count",
    "maskgit_loss",
    "maskgit_sample",
    "save_tokens",
]

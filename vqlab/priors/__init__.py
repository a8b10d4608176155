"""Generative priors over tokenizer ids: the token file, MaskGIT, its schedules and sampler."""

from vqlab.priors.maskgit import MaskGIT, MaskGITLoss, evaluate_prior, maskgit_loss
from vqlab.priors.sampling import maskgit_sample
from vqlab.priors.schedules import SCHEDULES, gamma, get_schedule, mask_count
from vqlab.priors.tokens import TokenData, TokenFileError, load_tokens, save_tokens

__all__ = [
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

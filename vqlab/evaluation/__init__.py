"""Image-quality metrics: the feature net, FD/KD in its feature space, PSNR, SSIM and pixel
distance (GENERATION.md, Metrics)."""

from vqlab.evaluation.errors import FeatNetError
from vqlab.evaluation.featnet import (
    ARCHS,
    FeatNet,
    FeatNetConfig,
    build_featnet,
    load_featnet,
    save_featnet,
    train_featnet,
)
from vqlab.evaluation.frechet import (
    extract_features,
    fd_kd,
    fd_kd_paths,
    frechet_distance,
    kernel_distance,
)
from vqlab.evaluation.image_metrics import class_consistency, pixel_distance, psnr, ssim
from vqlab.evaluation.images_io import load_image_set

__all__ = [
    "ARCHS",
    "FeatNet",
    "FeatNetConfig",
    "FeatNetError",
    "build_featnet",
    "class_consistency",
    "extract_features",
    "fd_kd",
    "fd_kd_paths",
    "frechet_distance",
    "kernel_distance",
    "load_featnet",
    "load_image_set",
    "pixel_distance",
    "psnr",
    "save_featnet",
    "ssim",
    "train_featnet",
]

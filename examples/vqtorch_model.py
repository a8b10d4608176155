"""A model around vector-quantize-pytorch's ``VectorQuantize`` (EMA codebook), in a plain loop.

    python examples/vqtorch_model.py --config configs/synthetic.yaml            # standard
    python examples/vqtorch_model.py --config configs/synthetic.yaml --deferred # deferred

Needs ``pip install 'vqlab[peer]'`` (vector-quantize-pytorch 1.32). The layer's settings are
the config's, mapped as ``vq.impl=vector_quantize_pytorch`` maps them (decay, eps, commitment
weight, rotation trick), so ``vqlab train`` with that impl trains the same model. Three lines
(marked ``# plug-in``) turn the standard run into a deferred one.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from common import batches, clock, measure, parse_args, plugin_options, report, setup
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from vqlab import DeferredQuantizer  # plug-in


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, __doc__.splitlines()[0])
    config, data, encoder, decoder = setup(args)
    vq, tc = config.vq, config.train
    image = len(data.input_shape) == 3  # conv latents (B, D, h, w), else MLP vectors (B, D)
    quantizer = VectorQuantize(
        dim=config.model.latent_dim,
        codebook_size=vq.codebook_size,
        decay=vq.decay,
        eps=vq.eps,
        commitment_weight=vq.beta,
        rotation_trick=vq.estimator == "rotation",
        accept_image_fmap=image,
    )
    if args.deferred:  # plug-in
        quantizer = DeferredQuantizer(quantizer, **plugin_options(config, args))  # plug-in
    model = nn.ModuleList([encoder, quantizer, decoder])
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    t0 = clock()
    for idx in batches(data.train_x.shape[0], tc.batch_size, tc.steps, config.seed):
        x = data.train_x[idx]
        z_q, _, vq_loss = quantizer(encoder(x))
        loss = F.mse_loss(decoder(z_q), x) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    metrics = measure(
        config,
        data,
        encoder,
        lambda z: quantizer(z)[1],
        lambda z: decoder(quantizer(z)[0]),
        clock() - t0,
    )
    metrics.update(loop="vqtorch", strategy="deferred-plugin" if args.deferred else "standard")
    report(metrics, args.out)
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env bash
# Finding 1 (and 2's tokenizer side): multi-scale tokenizers at the var cpu preset's model and
# budget (width 16, K=1024, scales 1,2,3,4,6,8, 500 steps, deferred: 250 pretrain + 250 VQ) but
# MSE only (no perceptual loss), one seed: loss_on every_scale vs final, standard vs deferred,
# plus the encoder's GroupNorm at 8 groups (model.norm_groups=8). Run from the repo root;
# checkpoints go to runs/var-findings (ignored), the committed copies to results/.
set -euo pipefail
PY=${PY:-/work/main/.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: the 2 cores are shared, and idle spinning wastes them
OUT=${OUT:-runs/var-findings}
COMMON=(data.name=cifar10 data.path=../shared/data/cifar10 data.test_limit=500
  model.kind=conv model.latent_dim=64 model.downsample=4 model.width=16
  vq.kind=multiscale vq.scales=1,2,3,4,6,8 vq.codebook_size=1024 vq.update=ema vq.beta=0.25
  vq.decay=0.99 vq.init=kmeans vq.init_samples=32768 vq.kmeans_iters=10
  train.batch_size=64 train.steps=500 train.pretrain_steps=250 train.lr=5e-4
  train.eval_every=50 train.log_every=25 train.checkpoint_every=50)
run() {  # name, extra --set values
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && return 0
  local sets=(); for kv in "${COMMON[@]}" "$@"; do sets+=(--set "$kv"); done
  local t0=$SECONDS
  if [ -d "$OUT/$name/checkpoint" ]; then
    nice -n 19 "$PY" -m vqlab train --resume "$OUT/$name" --quiet
  else
    nice -n 19 "$PY" -m vqlab train --out "$OUT/$name" --overwrite --quiet "${sets[@]}"
  fi
  echo "$name $((SECONDS - t0)) s" >> "$OUT/wall.txt"
}
for groups in ${GROUPS_LIST:-32}; do
  for loss_on in ${LOSS_ON_LIST:-every_scale final}; do
    for strategy in ${STRATEGIES:-deferred standard}; do
      run "${strategy}__${loss_on}__g${groups}" train.strategy=$strategy vq.loss_on=$loss_on \
        model.norm_groups=$groups
    done
  done
done

#!/usr/bin/env bash
# Everything of issue 22's measurements in priority order, each stage resumable (a finished run
# is skipped, an unfinished one resumes from its checkpoint). Run from the repo root:
#   nohup results/var-findings-cpu/queue.sh > runs/queue.log 2>&1 &
set -euo pipefail
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
N="nice -n 19"
[ -f results/prior-curve-cpu/step_cost.json ] || $N $PY results/prior-curve-cpu/step_cost.py
[ -f runs/var-findings/finding2.json ] || $N $PY results/var-findings-cpu/finding2.py
STRATEGIES=deferred results/var-findings-cpu/run_f1.sh             # finding 1: the deciding pair
$N $PY results/var-findings-cpu/finding3.py deferred__every_scale__g32  # finding 3
STRATEGIES=standard results/var-findings-cpu/run_f1.sh             # finding 1: standard beside
GROUPS_LIST=8 LOSS_ON_LIST=final results/var-findings-cpu/run_f1.sh  # the corrected tokenizer
$N $PY results/var-findings-cpu/finding2.py runs/var-findings/*__g32 runs/var-findings/*__g8
$N $PY results/prior-curve-cpu/curve.py                             # the compute curve

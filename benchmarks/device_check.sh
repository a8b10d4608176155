#!/usr/bin/env bash
# The GPU check of vqlab's speed, sized for one lent H100/H200 (under 8 minutes in all).
#
#   benchmarks/device_check.sh OUTDIR            # on a machine with one CUDA GPU
#   benchmarks/device_check.sh OUTDIR --smoke    # toy sizes on the CPU (the test suite runs it)
#
# Stages, each a benchmark script of this folder under its own time limit (a stage that runs
# over is killed, the next one starts, and what it had written is kept):
#   vq         bench_vq.py: the fused Triton kernel (exact, fast) against chunked torch, cdist
#              and the bf16 GEMM floor (search), and vqlab's VQ train step against
#              vector-quantize-pytorch's (time, peak memory)
#   tokenizer  bench_tokenizer.py: 300 steps of the gpu tokenizer preset at its real size
#              (128 px, K = 16,384, perceptual loss; synthetic images), k-means init, images/s
#   kmeans     bench_kmeans.py: GPU k-means (1M x 64 -> 16,384), seeding and Lloyd
#   prior      bench_prior.py: MaskGIT and VAR train steps against nn.TransformerEncoder
#
# Writes to OUTDIR (at most 8 files, none in sub-folders: what a lent machine sends back):
#   stages.csv       stage, status (ok, timeout, failed), exit_code, seconds, limit_s
#   environment.csv  one row: device, versions, threads, smoke
#   vq_*.csv, tokenizer_*.csv, kmeans_*.csv, prior_*.csv   the benchmarks' own CSVs
#   device_check.log everything the stages printed
#
# Environment: PYTHON (default python3); VQLAB_PEER_PATH, a folder holding
# vector-quantize-pytorch and its pure-python needs (added to PYTHONPATH; without the peer its
# rows say "not installed"). --smoke sets TRITON_INTERPRET=1 (the kernel in triton's CPU
# interpreter), one torch thread and toy sizes: it checks that the script runs, not speed.
set -u

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: benchmarks/device_check.sh OUTDIR [--smoke]" >&2
    exit 2
fi
OUT=$1
SMOKE=0
if [ $# -ge 2 ]; then
    if [ "$2" = "--smoke" ]; then SMOKE=1; else
        echo "device_check.sh: unknown option '$2' (only --smoke)" >&2
        exit 2
    fi
fi
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/benchmarks
export PYTHONPATH="$ROOT${VQLAB_PEER_PATH:+:$VQLAB_PEER_PATH}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vqlab-device-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# the tokenizer stage decodes its images into vqlab's cache: keep that out of ~/.cache
export VQLAB_CACHE=$WORK/cache
LOG=$OUT/device_check.log
: >"$LOG"
echo "stage,status,exit_code,seconds,limit_s" >"$OUT/stages.csv"

if [ $SMOKE = 1 ]; then
    export TRITON_INTERPRET=1 OMP_NUM_THREADS=1
    DEV=cpu
else
    DEV=cuda
fi

# stage NAME LIMIT_S CMD...: run CMD with its outputs in $WORK/NAME, copy its CSVs to OUT
stage() {
    local name=$1 limit=$2
    shift 2
    mkdir -p "$WORK/$name"
    echo "== $name (limit ${limit}s): $*" >>"$LOG"
    local t0 rc status
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" --out-dir "$WORK/$name" >>"$LOG" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout ;;
        *) status=failed ;;
    esac
    local secs
    secs=$("$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" \
        "$t0" "$(date +%s.%N)")
    echo "$name,$status,$rc,$secs,$limit" >>"$OUT/stages.csv"
    echo "== $name: $status (exit $rc) in ${secs}s" >>"$LOG"
    cp "$WORK/$name"/*.csv "$OUT"/ 2>/dev/null || true
}

"$PY" - "$OUT/environment.csv" "$SMOKE" >>"$LOG" 2>&1 <<'EOF'
import csv, importlib.metadata as md, os, platform, sys
import torch
row = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
       "torch": torch.__version__, "cuda": torch.version.cuda or "", "python":
       platform.python_version(), "cpus": os.cpu_count(), "torch_threads":
       torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
       "loadavg_1min": os.getloadavg()[0], "smoke": sys.argv[2] == "1"}
for dist in ("triton", "vector-quantize-pytorch", "scikit-learn", "faiss-cpu"):
    try:
        row[dist] = md.version(dist)
    except md.PackageNotFoundError:
        row[dist] = "none"
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(row))
    w.writeheader()
    w.writerow(row)
print(row)
EOF

if [ $SMOKE = 1 ]; then
    stage vq 120 "$PY" "$BENCH/bench_vq.py" --smoke --device cpu --sections search,train
    stage tokenizer 120 "$PY" "$BENCH/bench_tokenizer.py" --smoke --device cpu
    stage kmeans 120 "$PY" "$BENCH/bench_kmeans.py" --device cpu --n 2000 --dim 8 --k 16 \
        --iters 3 --repeats 1
    stage prior 120 "$PY" "$BENCH/bench_prior.py" --device cpu --priors maskgit,var \
        --sizes small --batch 4 --seq-len 16 --scales 1,2,4 --codebook-size 32 \
        --latent-dim 8 --train-steps 1 --sample-n 4 --steps 2 --repeats 1
else
    # 160 + 150 + 90 + 50 = 450 s of limits: the whole check ends inside 8 minutes. The
    # tokenizer stage writes and decodes 1,100 128-px images (the k-means sample of 262,144
    # latents needs 1,024), trains the perceptual net 50 steps, then k-means and 300 steps
    stage vq 160 "$PY" "$BENCH/bench_vq.py" --device cuda --budget-s 110
    stage tokenizer 150 "$PY" "$BENCH/bench_tokenizer.py" --preset gpu --steps 300 \
        --pretrain-steps 100 --train-images 1100 --device cuda
    stage kmeans 90 "$PY" "$BENCH/bench_kmeans.py" --device cuda --repeats 1
    stage prior 50 "$PY" "$BENCH/bench_prior.py" --device cuda --priors maskgit,var \
        --sizes small base --train-steps 20 --sample-n 256
fi
cat "$OUT/stages.csv"
# exit 1 when a stage failed or ran out of time, after every stage had its turn
! grep -q ',failed,\|,timeout,' "$OUT/stages.csv"

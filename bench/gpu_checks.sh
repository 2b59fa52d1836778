#!/usr/bin/env bash
# Every GPU check of issue 13 in one run on a lent GPU machine (the `device` tool), results under $OUT.
# That machine has torch, transformers, Lightning and sentence-transformers but no network: the caller carries
# .gpu/ (ignored by git; made by bench/gpu_carry.sh) with wheels of what it lacks (.gpu/whl), all-MiniLM-L6-v2 in fp16 (.gpu/model, loaded as
# fp32), the Home Depot dataset (.gpu/datasets) and an older recnb for the before/after step profile (.gpu/old).
# Each check has its own time limit and failure does not stop the others.
# DEVICE=cpu SMALL=1 PIP=true PY=.venv/bin/python bash bench/gpu_checks.sh rehearses it here on the CPU, small
# (rehearsed 2026-11-28: every step ran, 4 min 48 s).
set -u
DEVICE=${DEVICE:-cuda}
if [ -n "${SMALL:-}" ]; then SIZES=50000; STEPS="--steps 4 --items 3000"; N=500; else SIZES=1000000,10000000; STEPS="--steps 400"; N=20000; fi
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
export RECNB_DEFAULT_MODEL=$PWD/.gpu/model RECNB_DATASETS_DIR=$PWD/.gpu/datasets TOKENIZERS_PARALLELISM=false
${PIP:-python3 -m pip} install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }
quiet() { grep -v -E "Warning|warn\(|Loading weights|Writing model|litlogger|TPU available|LOCAL_RANK|treespec|^\s*$"; }

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; lscpu | grep "Model name"; nproc;
  ${PY:-python3} -c "import torch, transformers, pytorch_lightning, sentence_transformers as s; print(torch.__version__, transformers.__version__, pytorch_lightning.__version__, s.__version__)"; } 2>&1 | tee -a "$OUT/log.txt"

log "pytest -m gpu"
timeout 150 ${PY:-python3} -m pytest -q -m gpu -p no:cacheprovider tests/test_scorer.py tests/test_encoder.py tests/test_model.py 2>&1 | tail -15 | tee -a "$OUT/log.txt"

log "scorer on $DEVICE"
timeout 170 ${PY:-python3} bench/bench_scorer.py --device $DEVICE --sizes $SIZES --batches 1,64,1000 --contenders recnb,torch \
  --json "$OUT/scorer.json" 2>&1 | quiet | tee "$OUT/scorer.txt"

log "training on $DEVICE: sentence-transformers vs recnb, bf16-mixed, batch 64"
timeout 300 ${PY:-python3} bench/bench_train.py --device $DEVICE $STEPS --negatives bm25,none --buckets auto,4 \
  --out /tmp/train --json "$OUT/train.json" 2>&1 | quiet | tee "$OUT/train.txt"

log "step profile of the recnb before this change"
PYTHONPATH=/tmp/site:$PWD/.gpu/old timeout 90 ${PY:-python3} bench/bench_train.py --device $DEVICE --profile-only ${SMALL:+--items 3000} --buckets 4 \
  --out /tmp/train-old --json "$OUT/profile-old.json" 2>&1 | quiet | tail -4 | tee -a "$OUT/log.txt"

log "encoding on $DEVICE"
timeout 90 ${PY:-python3} bench/bench_encode.py --device $DEVICE --n $N --rounds 3 --batch-sizes 256 2>&1 | quiet | tail -12 | tee "$OUT/encode.txt"
log "done"

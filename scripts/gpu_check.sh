#!/usr/bin/env bash
# The GPU check, in a few minutes on one lent CUDA machine: the CUDA tests, the benchmark on the GPU
# (cuDNN tutorial vs rnnkit, float16 autocast, GPU utilisation) and one epoch of each shipped config.
#
#   bash scripts/gpu_check.sh prepare /path/to/20news-bydate.tar.gz   # here, with pip: fills .gpu/
#   bash scripts/gpu_check.sh run                                      # there, from the repository root
#
# `prepare` copies the archive and downloads wheels of the core packages the GPU image lacks into
# .gpu/ (git-ignored), so `run` needs no network; carry .gpu/ to the GPU machine. `run` writes every
# log, benchmark.json and summary.txt into $OUT (default gpu-check/). The shipped configs run with
# random embeddings (the GloVe package is too large to carry); their accuracies after one epoch are a
# smoke check, not results. A two-process torchrun needs two GPUs: NCCL refuses two ranks on one.
set -uo pipefail

HERE=.gpu
ARCHIVE=$HERE/20news-bydate.tar.gz
MISSING_ON_GPU_IMAGE=(gensim==4.4.0 smart_open==9.0.2 iterative-stratification==0.1.9)

prepare() {
  local archive=${1:?give the path of 20news-bydate.tar.gz}
  mkdir -p "$HERE/wheels"
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
  install -m 644 "$archive" "$ARCHIVE"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$HERE/wheels" "${MISSING_ON_GPU_IMAGE[@]}"
  du -sh "$HERE"
}

step() {  # step NAME LIMIT_S COMMAND...: output in $OUT/NAME.log, exit status and time in summary.txt
  local name=$1 limit=$2 started=$SECONDS status
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  status=$?
  echo "$name: exit $status$( ((status == 124)) && echo " (stopped at its ${limit} s limit)"), $((SECONDS - started)) s" \
    | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

run() {
  OUT=${OUT:-gpu-check}
  mkdir -p "$OUT"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$HERE"/wheels/*.whl || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/summary.txt"
  python3 -c 'import torch; print("torch", torch.__version__, "cuDNN", torch.backends.cudnn.version())' \
    | tee -a "$OUT/summary.txt"
  step tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
  # The CPU table's batch of 64 (a GPU runs it launch-bound), then a batch of 512 that loads the GPU;
  # more timed batches than on the CPU, where one batch takes milliseconds.
  step benchmark 150 python3 scripts/benchmark.py --device cuda --archive "$ARCHIVE" --no-keras \
    --batches 60 --warmup 10 --infer-batches 10 --json "$OUT/benchmark.json"
  step benchmark-b512 120 python3 scripts/benchmark.py --device cuda --archive "$ARCHIVE" --no-keras \
    --batch-size 512 --batches 30 --warmup 5 --infer-batches 10
  for config in rnn lstm gru; do
    step "epoch-$config" 60 python3 -m rnnkit train --config "configs/$config.yaml" \
      --set data.archive="$ARCHIVE" --set train.epochs=1 --set embeddings.source=random \
      --set train.device=cuda --set train.progress=false --run-dir "/tmp/gpu-runs/$config"
  done
}

case ${1:-} in
  prepare) prepare "${2:-}" ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu_check.sh prepare ARCHIVE | run" >&2; exit 2 ;;
esac

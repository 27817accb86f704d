#!/usr/bin/env bash
# Accuracy sweep on one lent GPU: many 20 Newsgroups runs side by side, one CPU thread each (the
# first minutes are word2vec on the CPU; then the runs share the GPU, which one run of batch 64
# leaves mostly idle). Each line of SWEEP is a run: NAME CONFIG [SECTION.KEY=VALUE ...].
#
#   bash scripts/gpu_check.sh prepare /path/to/20news-bydate.tar.gz   # here: fills .gpu/ (archive, wheels)
#   bash scripts/gpu_sweep.sh SWEEP [LIMIT_S]                         # there, from the repository root
#
# e.g. a SWEEP line `gru-full-ls0.2-s1 gru data.remove=[] train.label_smoothing=0.2 train.seed=1`.
# Embeddings come from $GLOVE (default .gpu/glove-6b-50d-20ng.bin, GloVe cut to the corpus's words,
# since the whole package is larger than a transfer allows) beside word2vec trained on the corpus.
# Writes one log per run and results.tsv (name, overrides, test accuracy, best epoch, seconds) into
# $OUT (default gpu-sweep/); a run over LIMIT_S (default 290) seconds is stopped and reads FAILED.
# At most $JOBS (default 14) runs at a time: each holds its corpus and vectors in memory.
set -uo pipefail

SWEEP=${1:?give a file of runs: NAME CONFIG [KEY=VALUE ...] per line}
LIMIT=${2:-290}
OUT=${OUT:-gpu-sweep}
JOBS=${JOBS:-14}
GLOVE=${GLOVE:-$PWD/.gpu/glove-6b-50d-20ng.bin}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 RNNKIT_CACHE=/tmp/rnnkit-cache OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/results.tsv"
common=(--set data.archive=.gpu/20news-bydate.tar.gz --set "embeddings.source=[$GLOVE, train]"
        --set train.device=cuda --set train.progress=false --set train.baseline=false --set train.num_threads=1)
START=$SECONDS

run() {  # run NAME CONFIG [KEY=VALUE ...]
  local name=$1 config=$2 overrides=("${@:3}") args=() setting
  for setting in "${overrides[@]}"; do args+=(--set "$setting"); done
  timeout "$LIMIT" python3 -m rnnkit train --config "configs/$config.yaml" "${common[@]}" "${args[@]}" \
    --run-dir "/tmp/gpu-sweep/$name" > "$OUT/$name.log" 2>&1
  local accuracy best
  accuracy=$(grep -o "^test accuracy [0-9.]*  macro-F1 [0-9.]*" "$OUT/$name.log" | tail -1)
  best=$(grep -o "(best epoch [0-9]*\|(weights averaged over the last [0-9]* epochs" "$OUT/$name.log" | tail -1)
  printf '%s\t%s\t%s\t%s\t%ss\n' "$name" "${overrides[*]}" "${accuracy:-FAILED}" "${best#(}" \
    "$((SECONDS - START))" >> "$OUT/results.tsv"
}

while read -r -a line; do
  [[ ${#line[@]} -ge 2 && ${line[0]} != \#* ]] || continue
  while (($(jobs -rp | wc -l) >= JOBS)); do wait -n; done
  run "${line[@]}" &
done < "$SWEEP"
wait
cat "$OUT/results.tsv"

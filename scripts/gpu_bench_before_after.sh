#!/usr/bin/env bash
# Issue 27's GPU check, run through the device tool from the repo root (carry .whl-en or .whl):
# the accelerated models against the plain ones on the GPU's own paths, then the speed bench of
# an earlier tree and of this one in the same call, so that both meet the same machine.
#
#   git archive BEFORE | (mkdir -p .before && tar -x -C .before)   # here, before the call
#   bash scripts/gpu_bench_before_after.sh [MODELS...]             # on the device
#
# .before/ is the earlier commit's tree (untracked, so the device tool copies it; delete it
# afterwards). Writes $OUT/bench/{check.txt,before.json,after.json,*.log}. Optimized mode only
# (the figures the issues quote: training samples/s, batch-1 ms); each step has a time limit,
# so a slow compile cuts one step, not the call. Measured on the H200 (2026-12-04): the check
# needs more than 45 s, a tree's bench more than 155 s when it compiles cold (the second tree
# took 139 s), so keep the defaults (150 + 2 x 220 s, ~10 s of installs) inside the 600 s call.
set -uo pipefail
models=${*:-image-2 tpgsr crnn}
wheels=.whl-en; [ -d "$wheels" ] || wheels=.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl || exit 1
out=${OUT:-/tmp/out}/bench
mkdir -p "$out"
start=$(date +%s)
stamp() { echo "$1: exit $2 at $(( $(date +%s) - start )) s" | tee -a "$out/steps.log"; }
# shellcheck disable=SC2086
PYTHONPATH=$PWD:/tmp/site timeout -k 10 "${CHECK_S:-150}" python3 -m image_bench.cli bench \
    --check $models --device cuda 2>&1 | grep -v -i warn | tee "$out/check.txt"
stamp check "${PIPESTATUS[0]}"
for tree in before after; do
  dir=$PWD; [ "$tree" = before ] && dir=$PWD/.before
  [ -d "$dir" ] || { echo "no $dir"; continue; }
  # shellcheck disable=SC2086
  (cd "$dir" && PYTHONPATH=$dir:/tmp/site timeout -k 10 "${BENCH_S:-220}" python3 -m \
      image_bench.cli bench $models --device cuda --mode optimized --json "$out/$tree.json") \
    > "$out/$tree.log" 2>&1
  stamp "bench $tree" $?
  grep -v -i warn "$out/$tree.log" | tail -12
done

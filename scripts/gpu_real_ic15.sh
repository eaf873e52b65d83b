#!/usr/bin/env bash
# Issue 26, item 3, on the device tool (carry .whl-en and .real, .real/ic15-train a copy of
# ../shared/data/real/ic15-train): train CRNN, SVTR and IMAGE-1 on synth (S) and CRNN on
# TextZoom (S+L) at the quick schedule, and read the real ICDAR 2015 training crops and the
# stand-in IC15-352 with each. Each eval-<set>.json lands in its run folder; all are packed into
# $OUT/real_ic15.tar.gz.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl-en/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
export IMAGE_BENCH_CACHE=$PWD/.cache/image-bench
ib() { python3 -m image_bench.cli "$@"; }
read_both() {
  ib eval "$1" --data .real/ic15-train --device cuda 2>&1 | grep -v -i warn | tail -8
  ib eval "$1" --data ic15-352 --device cuda 2>&1 | grep -v -i warn | tail -6
}
mkdir -p runs/real
for m in crnn image-1 svtr; do
  extra=(); [ "$m" = image-1 ] || extra=(--set lr_fraction=0.0)
  ib train "$m" --data synth --profile quick "${extra[@]}" --run-dir "runs/real/$m-S" 2>&1 \
    | grep -v -i warn | tail -2
  read_both "runs/real/$m-S"
  if [ "$m" = crnn ]; then
    ib train crnn --data textzoom --profile quick --set lr_fraction=0.5 \
      --init runs/real/crnn-S --run-dir runs/real/crnn-SL 2>&1 | grep -v -i warn | tail -2
    read_both runs/real/crnn-SL
  fi
done
mkdir -p "${OUT:-/tmp/out}"
tar -czf "${OUT:-/tmp/out}/real_ic15.tar.gz" runs/real/*/eval-*.json runs/real/*/log.jsonl \
    runs/real/*/config.json runs/real/*/env.json 2>/dev/null

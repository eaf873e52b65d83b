#!/usr/bin/env bash
# Issue 26, item 3, on the device (called by scripts/gpu_reproduce.sh once table1's runs are in
# the store; .real/ic15-train a copy of ../shared/data/real/ic15-train): reads the real ICDAR
# 2015 training crops and the stand-in IC15-352 with the table's trained recognizers (CRNN and
# SVTR, S and S+L) and IMAGE (1 and 2, S and S+L). Each run's eval-ic15-train.json and
# eval-ic15-352.json land in its run folder; runs/real/runs.tsv names the runs.
set -uo pipefail
profile=${1:-quick}
mkdir -p runs/real
python3 - "$profile" > runs/real/runs.tsv <<'PY'
import sys
from image_bench.experiments.runner import Runner
runner = Runner("runs/results", sys.argv[1], compute=False)
plan = runner.plan()
runs = {f"{m}-{s}": plan.recognizer(m, s) for m in ("crnn", "svtr") for s in ("S", "S+L")}
runs.update({f"image-{n}-{s}": plan.image(n, s) for n in (1, 2) for s in ("S", "S+L")})
for label, cfg in runs.items():
    print(f"{label}\t{runner.run_dir(cfg)}")
PY
while IFS=$'\t' read -r label dir; do
  [ -e "$dir/best.pt" ] || { echo "$label: no checkpoint in $dir"; continue; }
  for data in .real/ic15-train ic15-352; do
    python3 -m image_bench.cli eval "$dir" --data "$data" --device "${DEVICE:-cuda}" 2>&1 \
      | grep -v -i warn | tail -3 | sed "s|^|$label $data: |"
  done
done < runs/real/runs.tsv

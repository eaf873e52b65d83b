#!/usr/bin/env bash
# The GPU reproduction (issue 8), run through the device tool from the repo root:
#   bash scripts/gpu_reproduce.sh [PROFILE] [SECONDS]
# Installs the wheels the GPU image lacks (.whl, from scripts/wheelhouse.sh), runs
# `image-bench run all` for at most SECONDS (the run store resumes a cut-off run on the next
# call while the machine is warm: runs/ and .cache/ are git-ignored and stay), then packs
# results/, figures/ and each run's log and loss curve into $OUT/reproduction.tar.gz.
set -uo pipefail
profile=${1:-quick}
seconds=${2:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
export IMAGE_BENCH_CACHE=$PWD/.cache/image-bench IMAGE_BENCH_RUNS=$PWD/runs
mkdir -p runs
start=$(date +%s)
timeout "$seconds" python3 -m image_bench.cli run all --profile "$profile" --device cuda \
    --results results --quiet 2>&1 | grep -v -i "warn" | tee -a runs/driver.log
status=${PIPESTATUS[0]}
echo "run all: exit $status after $(( $(date +%s) - start )) s"
mkdir -p "${OUT:-/tmp/out}"
tar -czf "${OUT:-/tmp/out}/reproduction.tar.gz" results figures \
    $(ls -d runs/*/log.jsonl runs/*/loss.png runs/*/config.json runs/*/env.json runs/driver.log \
      2>/dev/null)
ls -la "${OUT:-/tmp/out}"
exit 0

#!/usr/bin/env bash
# The GPU reproduction (issue 8), run through the device tool from the repo root:
#   IMAGE_BENCH_COMMIT=<commit of this tree> bash scripts/gpu_reproduce.sh [PROFILE] [SECONDS]
# Installs the wheels the GPU image lacks (.whl, from scripts/wheelhouse.sh) and runs
# `image-bench run all` for at most SECONDS. Everything it writes stays under runs/, which git
# ignores, so the device tool keeps it on a warm machine between calls and the run store
# resumes a cut-off reproduction on the next call. (A tracked folder such as results/ is
# replaced by the caller's copy on every call: the first reproduction lost its evaluation
# records that way and had to redo them.) Packs the store, the tables, the figures and each
# run's log and loss curve into $OUT/reproduction.tar.gz; copy runs/results/store into
# results/store here and `image-bench report all --profile PROFILE --results results` writes
# the tables. The device tool's cap is 600 s a command: keep SECONDS + 20 under it.
set -uo pipefail
profile=${1:-quick}
seconds=${2:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
export IMAGE_BENCH_CACHE=$PWD/.cache/image-bench IMAGE_BENCH_RUNS=$PWD/runs
mkdir -p runs/results
start=$(date +%s)
# SIGTERM at the limit: the training run in flight saves its step and the stage log says
# "stopped" (engine/interrupt.py); SIGKILL 20 s later if the process has not gone by then.
timeout -k 20 "$seconds" python3 -m image_bench.cli run all --profile "$profile" --device cuda \
    --results runs/results --quiet 2>&1 | grep -v -i "warn" | tee -a runs/driver.log
status=${PIPESTATUS[0]}
echo "run all: exit $status after $(( $(date +%s) - start )) s"
mkdir -p "${OUT:-/tmp/out}"
tar -czf "${OUT:-/tmp/out}/reproduction.tar.gz" runs/results $(ls -d runs/figures 2>/dev/null) \
    $(ls -d runs/*/log.jsonl runs/*/loss.png runs/*/config.json runs/*/env.json runs/driver.log \
      2>/dev/null)
ls -la "${OUT:-/tmp/out}"
exit 0

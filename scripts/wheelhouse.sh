#!/usr/bin/env bash
# Builds .whl/ (git-ignored) with every wheel the suite needs on the GPU machine and that its
# image lacks, for its Python (3.12, x86_64). Run from anywhere inside the checkout; it only
# downloads/builds wheels, it runs nothing on the GPU.
#
#   bash scripts/wheelhouse.sh
#
# 1. ../shared/device/wheelhouse.sh: its default set (lmdb, iopath, yacs, termcolor, editdistance,
#    fvcore).
# 2. wordfreq (text for the stand-in data) and the pure-Python dependencies that the GPU image
#    lacks: ftfy (+ wcwidth), langcodes, locate. msgpack and regex, wordfreq's other two, are
#    already in the image (KINDS.md, "Python packages already there"). Versions are the ones this
#    checkout is developed with (`pip show wordfreq ftfy langcodes locate wcwidth`).
#
# On the GPU machine, start the command with (and name ".whl" in the run's carry list):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target .site .whl/*.whl && export PYTHONPATH=$PWD:$PWD/.site || exit
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
bash ../shared/device/wheelhouse.sh
pure=(wordfreq==3.1.1 ftfy==6.3.1 wcwidth==0.7.0 langcodes==3.5.1 locate==1.1.1)
for p in "${pure[@]}"; do
  name=${p%%==*}
  ls .whl/"${name}"-*.whl >/dev/null 2>&1 && continue
  # pure-Python: a py3-none-any wheel from the index, or one built here from the sdist
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation py -d .whl "$p" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps -w .whl "$p"
done
ls -1 .whl

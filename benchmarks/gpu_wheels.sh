#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels a bare GPU machine lacks, into .whl/ (git-ignored), for
# Python 3.12 on x86_64 (the lent H200 machines' image: torch and numpy are there; these are not).
# benchmarks/gpu_check.sh installs whatever lies in .whl/ into a private site folder before it runs.
#   bash benchmarks/gpu_wheels.sh            # then carry .whl to the GPU machine with the checkout
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
# Pinned to what this project is tested with; timm is carried too because the image's may predate our floor.
WHEELS=(pyautoattack==0.2.0 SQLAlchemy==2.0.44 greenlet==3.2.4 submitit==1.5.3 timm==1.0.31)
mkdir -p .whl
for w in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$w" || { echo "gpu_wheels: could not download $w" >&2; exit 1; }
done
ls -la .whl

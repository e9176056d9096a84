#!/usr/bin/env bash
# Every GPU claim checked in one short command, run whenever a GPU machine is lent.
#   bash benchmarks/gpu_check.sh [--budget-s 420] [--dry-run] [--out DIR]
# Writes gpu-check.json, gpu-check.md and gpu-check.log into $OUT (a device machine's return folder) or
# ./gpu-check/. The steps, their order and their time shares are in benchmarks/gpu_check.py.
# On a bare GPU machine: run `bash benchmarks/gpu_wheels.sh` here first and carry `.whl` with the checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
# Only wheels built for this interpreter (gpu_wheels.sh fetches cp312 ones for the lent machines' Python 3.12).
tag=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null || echo none)
if [[ " $* " != *" --dry-run "* ]] && compgen -G ".whl/*-$tag-*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/robustscale-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" \
    || echo "gpu_check: installing .whl/*.whl failed; going on with what is installed" >&2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# Download the wheels bench/gpu_check.py needs on the lent GPU machine (Python 3.12, x86-64), whose
# image has torch/transformers/accelerate but not diffusers, spandrel, PyAV or pydantic-settings.
# Run here, in the repo root; the wheels land in .whl/ (ignored by git), which the device call
# carries and installs:
#   scripts/prepare_gpu_wheels.sh
#   run(carry=[".whl"], command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src:$PWD/bench \
#       PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 && python3 bench/gpu_check.py")
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
PY=${PYTHON:-/work/main/.venv/bin/python}
# one version of each, matching what the suite runs here; pure-Python ones are any-platform wheels
PACKAGES=(
  diffusers==0.42.1 spandrel==0.4.2 av==18.1.0
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv annotated-types
  typing-inspection
)
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${PACKAGES[@]}"
du -sh .whl

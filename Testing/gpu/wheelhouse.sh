#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with every wheel the GPU machine lacks to run FateSAM and Testing/gpu/check.sh, and
# .gpu-data/ (git-ignored) with the few cases check.sh reads from ../shared/data (the device gets the repository only):
# CPython 3.12, manylinux x86_64, its image already holding torch, torchvision, numpy, PyYAML, tqdm, Pillow,
# packaging, portalocker, typing-extensions, click, h11, anyio and idna (see the device notes). Nothing here is
# installed; torch is never downloaded.
#
#   bash Testing/gpu/wheelhouse.sh            # run from anywhere; prints the folder's size at the end
#   bash Testing/gpu/wheelhouse.sh --verify PYTHON3.12
#
# --verify then checks that the folder is complete: in a fresh venv of the given Python 3.12 that holds what the GPU
# machine's image holds (torch 2.11 and torchvision 0.26 from PyPI, installed without their CUDA libraries, so torch
# cannot be imported there), every wheel installs as check.sh installs them (no index) and `pip check` finds no
# requirement unmet but torch's own CUDA libraries; the binary wheels must import. The venv is removed afterwards.
# (pip's resolver, `pip install --no-index --find-links .whl fatesam`, cannot be the check: it also wants torch's CUDA
# libraries, which only the GPU machine has.)
#
# Pure-Python packages published only as source (sam2, iopath, antlr4's runtime) and FateSAM itself are built here
# as py3-none-any wheels: sam2 with SAM2_BUILD_CUDA=0 (no extension; check.sh builds sam2's CUDA extension on the
# GPU machine from sam2's source, which is kept here too). Binary packages are downloaded for cp312 manylinux.
set -euo pipefail
VERIFY_PYTHON=""
if [[ "${1:-}" == "--verify" ]]; then VERIFY_PYTHON="${2:?--verify needs a Python 3.12 interpreter}"; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/.whl"
PYTHON="${PYTHON:-python3}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)

# Built here (their PyPI releases are source only, or they are ours).
SOURCE_ONLY=(sam2==1.1.0 iopath==0.1.10 antlr4-python3-runtime==4.9.3)
# Downloaded as wheels for the GPU machine's Python: sam2's and FateSAM's needs, and the server's (check.sh times a
# server job). One version of each: those the tests pass with here.
BINARY=(
  hydra-core==1.3.8 omegaconf==2.3.1
  SimpleITK==2.5.7 slicerio==1.4.0 pynrrd==1.1.3
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 python-multipart==0.0.34
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 opentelemetry-api==1.45.2
)

rm -rf "$OUT" && mkdir -p "$OUT"
cd "$ROOT"
# sam2's source: check.sh builds its CUDA extension from it on the GPU machine.
"$PYTHON" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$OUT" sam2==1.1.0 -q
# sam2's setup.py imports torch, so its wheel is built against the torch installed here (no build isolation).
SAM2_BUILD_CUDA=0 "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$OUT" "${SOURCE_ONLY[@]}" -q
"$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$OUT" "$ROOT" -q
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$OUT" "${BINARY[@]}" -q

for wheel in "$OUT"/*.whl; do
  case "$(basename "$wheel")" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-* | *-abi3-*) ;;
    *) echo "wheelhouse: $(basename "$wheel") does not fit CPython 3.12" >&2; exit 1 ;;
  esac
done
# The cases check.py reads (Testing/gpu/check.py: HIPPOCAMPUS, ABDOMEN), in the shared data's layout.
DATA="$ROOT/.gpu-data"
rm -rf "$DATA"
for case in msd_task04_hippocampus/hippocampus_001 msd_task04_hippocampus/hippocampus_003 \
  msd_task04_hippocampus/hippocampus_004 chaos_t2spir_abdomen/chaos_t2_01 chaos_t2spir_abdomen/chaos_t2_05; do
  for kind in images labels; do
    mkdir -p "$DATA/$(dirname "$case")/$kind"
    cp "$ROOT/../shared/data/$(dirname "$case")/$kind/$(basename "$case").nii.gz" "$DATA/$(dirname "$case")/$kind/"
  done
done
echo "wheelhouse: $(ls "$OUT" | wc -l) files, $(du -sm "$OUT" | cut -f1) MiB in $OUT; $(du -sm "$DATA" | cut -f1) MiB in $DATA"
echo "wheelhouse: what travels (tracked and untracked files, .whl, .gpu-data): $(
  { git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1
    du -sb "$OUT" "$DATA" | cut -f1; } | awk '{s += $1} END {printf "%.1f MiB of 64", s / 1048576}')"

[[ -n "$VERIFY_PYTHON" ]] || exit 0
# What the GPU machine's image already holds, of what FateSAM, sam2 and the server need (device notes, 2026-11-17).
IMAGE=(torch==2.11.0 torchvision==0.26.0 numpy pyyaml tqdm pillow packaging portalocker typing-extensions click h11
  anyio idna requests annotated-doc filelock jinja2 markupsafe sympy "mpmath<1.4" networkx fsspec "setuptools<82"
  charset-normalizer urllib3 certifi)
VENV="$(mktemp -d)"
trap 'rm -rf "$VENV"' EXIT
"$VERIFY_PYTHON" -m venv "$VENV"
PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install -q --no-deps --only-binary=:all: "${IMAGE[@]}"
# As check.sh installs them there: no index, no resolver. Then every requirement must be met, except torch's CUDA
# libraries, which the image has and this venv lacks.
PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install -q --no-index --no-deps "$OUT"/*.whl
unmet="$("$VENV/bin/python" -m pip check | grep -v -E "^(torch|torchvision) " || true)"
if [[ "$unmet" != "No broken requirements." && -n "$unmet" ]]; then echo "wheelhouse: unmet: $unmet" >&2; exit 1; fi
"$VENV/bin/python" -c "import SimpleITK, slicerio, hydra, omegaconf, iopath, fastapi, uvicorn, multipart"
echo "wheelhouse: complete for a fresh $("$VENV/bin/python" --version) venv with the GPU image's packages"

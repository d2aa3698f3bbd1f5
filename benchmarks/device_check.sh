#!/usr/bin/env bash
# The GPU check, ready to run on a CUDA machine (and runnable on a CPU: --device cpu).
#
#   benchmarks/device_check.sh                  # CUDA: GPU tests + end to end, widths 128..1024
#   benchmarks/device_check.sh --device cpu     # the same script on the CPU, small widths
#   benchmarks/device_check.sh --widths 128 256 # other widths
#
# 1. runs the tests marked `device` (tests/test_device.py, on the chosen device; the normal
#    suite runs them on CUDA when available, else on the CPU);
# 2. runs benchmarks/e2e.py (reconstruct end to end: float32 CG iterations + float64 refinement,
#    proven bound, independent error) at each width, one fresh process per width;
# 3. writes the table to $OUT/device_check.md when $OUT is set (the device tool's folder),
#    else to benchmarks/device_check.md, and prints it.
# Budget: under 5 minutes on one data-centre GPU (each width has its own timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
WIDTHS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --widths) shift; while [[ $# -gt 0 && "$1" != --* ]]; do WIDTHS+=("$1"); shift; done ;;
    *) echo "device_check.sh: unknown argument $1 (use --device cuda|cpu, --widths W...)" >&2; exit 2 ;;
  esac
done
if [[ ${#WIDTHS[@]} -eq 0 ]]; then
  if [[ "$DEVICE" == cpu ]]; then WIDTHS=(32 64); else WIDTHS=(128 256 512 1024); fi
fi
PY=${PYTHON:-python}
if [[ -x .venv/bin/python && -z "${PYTHON:-}" ]]; then PY=.venv/bin/python; fi
OUTDIR=${OUT:-benchmarks}
mkdir -p "$OUTDIR"
echo "== device check: $DEVICE, widths ${WIDTHS[*]}, $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"
if [[ "$DEVICE" != cpu ]]; then
  $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device here: use --device cpu")'
fi
echo "== tests (device $DEVICE)"
NORMONLY_TEST_DEVICE="$DEVICE" timeout 240 $PY -m pytest -q -p no:cacheprovider -m device tests/test_device.py
echo "== end to end"
timeout 600 $PY benchmarks/e2e.py --device "$DEVICE" --widths "${WIDTHS[@]}" --reps 1 \
  --naive-max-width 0 --timeout 240 --out "$OUTDIR/device_check.md"

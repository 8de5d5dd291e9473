#!/usr/bin/env bash
# Everything the GPU figures need, in one device call (device time is scarce): the plain-transformers
# baseline and VESL's detection and captioning benchmarks, on the same machine in the same run.
# Prepare on the development machine (../shared does not travel to the device):
#   rm -rf shared && mkdir -p shared/data/coco_val2017 && cp -r ../shared/bench shared/ \
#     && cp -r ../shared/data/coco_val2017/images shared/data/coco_val2017/
# and the GPU JPEG decoder's wheels (the device image lacks them; Python 3.12 there):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     nvidia-nvimgcodec-cu12==0.9.0.20 nvidia-nvjpeg-cu12==12.4.0.76
# then run `bash bench/run_gpu.sh` on the device with `shared` and `.whl` carried. Results: $OUT/*.jsonl.
# The device image has torch, transformers, pyarrow and Pillow; the rest comes from .whl.
set -uo pipefail
OUT=${OUT:-/tmp/vesl-bench}
mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WORKERS=$(( $(nproc) - 2 ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

run() { echo "+ $*" >&2; "$@" | tee -a "$OUT/vesl_bench.jsonl"; }
# VESL, L/14 @ 448 (CLOC): eager bf16, then compiled; the equality check runs with each.
run python3 -m bench.detect --arch owlv2-l14 --image-size 448 --batch 128 --dtype bfloat16 --images 2048 --workers "$WORKERS"
run python3 -m bench.detect --arch owlv2-l14 --image-size 448 --batch 128 --dtype bfloat16 --images 2048 --workers "$WORKERS" --compile
# The same with JPEGs decoded and letterboxed on the GPU (nvImageCodec/nvJPEG), equality included.
run python3 -m bench.detect --arch owlv2-l14 --image-size 448 --batch 128 --dtype bfloat16 --images 2048 --workers "$WORKERS" --compile --image-decoder nvimgcodec
run python3 -m bench.detect --arch owlv2-l14 --image-size 1008 --batch 16 --dtype bfloat16 --images 256 --workers "$WORKERS" --compile
run python3 -m bench.detect --arch owlv2-b16 --image-size 960 --batch 32 --dtype bfloat16 --images 512 --workers "$WORKERS" --compile
run python3 -m bench.caption --arch blip-large --batch 64 --dtype bfloat16 --images 512
# The plain-transformers baseline (serial, compile, processor on GPU, 8-worker DataLoader).
(cd shared/bench && OUT="$OUT" N=1024 python3 hf_e2e_baseline.py)

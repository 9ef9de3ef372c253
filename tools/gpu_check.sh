#!/usr/bin/env bash
# The GPU checks and measurements of the scale-out issue, as one script (a few minutes on one H100):
#
#   bash tools/gpu_check.sh [OUT_DIR]        # default OUT_DIR: runs/gpu_check
#
# 1. versions, and whether torch and faiss see the GPU;
# 2. the CUDA-only tests (masks and the detector's table on the GPU);
# 3. `ifnd pretrain` end to end on the GPU (MoCo v2 + IFND on the built-in digits: AMP,
#    channels_last, pinned memory, a clustering round on faiss's GPU when it has one), and
#    `ifnd itm-train` on the built-in captioned digits (image encoder under bf16 autocast);
# 4. faiss k-means at ImageNet scale: 1,281,167 x 128, k = 25,000 (tools/bench_kmeans.py);
# 5. MoCo v2 ResNet-50, 224 px, batch 256, 200 steps, without and with an IFND label table over
#    1,281,167 samples: images/s, peak GPU memory, and the step-time ratio (tools/bench_pretrain.py).
# Every table is printed and also written to OUT_DIR/*.md. Needs the package installed
# (`pip install -e .`, then the faiss GPU build: see requirements-gpu.txt); the benchmarks read
# configs/experiments/kmeans.yaml and bench_pretrain.yaml, the flags below scale them up.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
if ! (cd / && python -c "import ifnd") 2>/dev/null; then
  echo "the ifnd package is not installed in this Python ($(command -v python)); run: pip install -e ." >&2
  exit 1
fi
mkdir -p "$out"

python - <<'EOF' | tee "$out/versions.txt"
import faiss, torch
from ifnd.falseneg.clustering import faiss_gpu_available
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
print(f"faiss {faiss.__version__}, faiss sees a GPU: {faiss_gpu_available()}")
EOF
faiss_gpu=$(python -c "from ifnd.falseneg.clustering import faiss_gpu_available as f; print('--gpu' if f() else '')")

python -m pytest -q tests/test_masks.py tests/test_detector.py -k "cuda or gpu" -rs | tee "$out/cuda_tests.txt"

python -m ifnd pretrain --config configs/fashion_mnist_moco_ifnd.yaml --set device=cuda --set data.name=digits \
    --set data.num_workers=4 --set train.epochs=4 --set train.batch_size=256 --set detection.warmup_epochs=2 \
    --set "detection.num_clusters=[10, 30]" --set knn.every=0 --set output_dir="$out/pretrain" | tee "$out/pretrain.md"

python -m ifnd itm-train --config configs/itm_demo.yaml --set device=cuda --set train.epochs=2 \
    --set data.num_workers=4 --set output_dir="$out/itm" | tee "$out/itm.md"

python tools/bench_kmeans.py --n 1281167 --d 128 --k 25000 --centres 25000 --methods random --repeats 1 \
    $faiss_gpu | tee "$out/kmeans.md"

python tools/bench_pretrain.py --backbone resnet50 --image-size 224 --stem imagenet --methods moco \
    --batch-size 256 --queue 65536 --steps 200 --warmup 20 --detection none,ifnd --num-samples 1281167 \
    --clusters 25000,50000,100000 --device cuda | tee "$out/throughput.md"

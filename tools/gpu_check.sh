#!/usr/bin/env bash
# The GPU checks and measurements of the scale-out issue, as one script (a few minutes on one H100):
#
#   bash tools/gpu_check.sh [OUT_DIR]        # default OUT_DIR: runs/gpu_check
#
# 1. versions, and whether torch and faiss see the GPU;
# 2. the CUDA-only tests (masks and the detector's table on the GPU);
# 3. `ifnd pretrain` end to end on the GPU (MoCo v2 + IFND on the built-in digits: AMP,
#    channels_last, pinned memory, a clustering round with torch k-means on the GPU), the same
#    under torchrun with one process (the NCCL process group, the round on every rank's shard),
#    the same with k chosen by silhouette on the GPU (detection.choose_k),
#    and `ifnd itm-train` on the built-in captioned digits (image encoder
#    under bf16 autocast);
# 4. faiss k-means at ImageNet scale: 1,281,167 x 128, k = 25,000 (tools/bench_kmeans.py), when
#    faiss has a GPU (on faiss's CPU build it would take far longer than the rest: skipped);
# 5. MoCo v2 ResNet-50, 224 px, batch 256, STEPS steps (default 200), without and with an IFND
#    label table over 1,281,167 samples: images/s, peak GPU memory, and the step-time ratio
#    (tools/bench_pretrain.py);
# 6. the data path (issue 22): the fast view path's tests with the device side on the GPU,
#    tools/bench_loader.py on 600 generated 500 x 375 JPEGs (CPU ms per image of each path, the
#    device side's images/s on the GPU, kornia against torchvision.transforms.v2 there), and
#    `ifnd pretrain` of MoCo v2 ResNet-50 (batch 256, 8 loader workers) on 6,400 generated JPEGs
#    with augment.device=cuda and =cpu: the second epoch's images/s of the full path, to set
#    against step 5's step-only rate (DATA_ONLY=1 runs steps 1 and 6 only);
# 7. one clustering round at ImageNet scale on the GPU with the torch k-means backend: 1,281,167 x
#    128, k = 25,000 / 50,000 / 100,000, levels + confidence + acceptance + table
#    (tools/bench_round.py; target: at most 60 s);
# 8. MoCo v2 ResNet-50 end to end on a generated ImageNet-shaped JPEG folder
#    (tools/imagenet_shaped_run.py): a clustering round before each of the last 2 of 3 epochs,
#    the kNN monitor every epoch and the detection tally every step, against the same run
#    without detection (target: wall time ratio at most 1.05).
# Each step runs even when an earlier one failed; a table at the end gives each step's exit
# status, and the script exits 1 when any step failed. Every table is printed and also written
# to OUT_DIR/*.md. Needs the package importable (`pip install -e .`; a faiss GPU build is
# optional, see requirements-gpu.txt); PYTHON picks the interpreter (default: python, else python3). The
# benchmarks read configs/experiments/kmeans.yaml and bench_pretrain.yaml, the flags below
# scale them up.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
py=${PYTHON:-$(command -v python || command -v python3)}
steps=${STEPS:-200}
if ! (cd / && "$py" -c "import ifnd") 2>/dev/null; then
  echo "the ifnd package is not importable by $py; run: pip install -e ." >&2
  exit 1
fi
mkdir -p "$out"
summary=()
failed=0

# step NAME FILE CMD...: run CMD, its output shown and written to OUT_DIR/FILE; record its status.
step() {
  local name=$1 file=$2
  shift 2
  echo "== $name" >&2
  local start=$SECONDS
  "$@" 2>&1 | tee "$out/$file"
  local rc=${PIPESTATUS[0]}
  summary+=("| $name | $rc | $((SECONDS - start)) |")
  [ "$rc" -eq 0 ] || failed=1
}

step versions versions.txt "$py" - <<'EOF'
import faiss, torch
from ifnd.falseneg.clustering import faiss_gpu_available
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
print(f"faiss {faiss.__version__}, faiss sees a GPU: {faiss_gpu_available()}")
EOF
faiss_gpu=$("$py" -c "from ifnd.falseneg.clustering import faiss_gpu_available as f; print('--gpu' if f() else '')")

if [ "${DATA_ONLY:-0}" != 1 ]; then
step "CUDA-only tests" cuda_tests.txt "$py" -m pytest -q tests/test_masks.py tests/test_detector.py -k "cuda or gpu" -rs

pretrain=(pretrain --config configs/fashion_mnist_moco_ifnd.yaml --set device=cuda --set data.name=digits
          --set data.num_workers=4 --set train.epochs=4 --set train.batch_size=256 --set detection.warmup_epochs=2
          --set "detection.num_clusters=[10, 30]" --set knn.every=0 --overwrite)  # a rerun checks afresh
step "pretrain on the GPU" pretrain.md "$py" -m ifnd "${pretrain[@]}" --set output_dir="$out/pretrain"
step "pretrain, torchrun 1 process (NCCL)" pretrain_torchrun.md "$py" -m torch.distributed.run --standalone \
    --nproc_per_node 1 -m ifnd "${pretrain[@]}" --set output_dir="$out/pretrain_torchrun"
step "pretrain, torchrun 1 process, k chosen by silhouette" pretrain_choose_k.md "$py" -m torch.distributed.run \
    --standalone --nproc_per_node 1 -m ifnd "${pretrain[@]}" --set detection.choose_k=silhouette \
    --set output_dir="$out/pretrain_choose_k"
step "itm-train on the GPU" itm.md "$py" -m ifnd itm-train --config configs/itm_demo.yaml --set device=cuda \
    --overwrite --set train.epochs=2 --set data.num_workers=4 --set output_dir="$out/itm"

if [ -n "$faiss_gpu" ]; then
  step "k-means 1,281,167 x 128, k 25,000" kmeans.md "$py" tools/bench_kmeans.py --n 1281167 --d 128 --k 25000 \
      --centres 25000 --methods random --repeats 1 --gpu
else
  echo "== k-means benchmark skipped: this faiss build has no GPU (see requirements-gpu.txt)" | tee "$out/kmeans.md"
  summary+=("| k-means 1,281,167 x 128, k 25,000 | skipped (faiss without GPU) | 0 |")
fi

step "MoCo v2 ResNet-50 throughput" throughput.md "$py" tools/bench_pretrain.py --backbone resnet50 --image-size 224 \
    --stem imagenet --methods moco --batch-size 256 --queue 65536 --steps "$steps" --warmup 20 --detection none,ifnd \
    --num-samples 1281167 --clusters 25000,50000,100000 --device cuda
fi

step "fast view path tests, device side on the GPU" fast_views_tests.txt env IFND_TEST_DEVICE=cuda "$py" -m pytest -q \
    tests/test_fast_views.py -k "device_augment or statistics"
jpegs="$out/jpegs"
step "loader CPU cost and device side (600 JPEGs)" bench_loader.md "$py" tools/bench_loader.py --root "$jpegs" \
    --generate 600 --images 576 --batch 256 --compare
"$py" -c "import pathlib, sys; sys.path.insert(0, 'tools'); import bench_loader; bench_loader.generate(pathlib.Path('$jpegs'), 6400)"
for path in cuda cpu; do
  step "pretrain MoCo v2 ResNet-50 from JPEGs, augment.device=$path" "full_path_$path.md" "$py" -m ifnd pretrain \
      --config configs/imagenet_moco_ifnd.yaml --set augment.device=$path --set data.root="$jpegs" --set data.test_root= \
      --set train.epochs=2 --set train.batch_size=256 --set data.num_workers=8 --set detection.mode=none \
      --set knn.every=0 --set model.sync_bn=false --set output_dir="$out/full_path_$path"
done
"$py" - "$out" <<'EOF' | tee "$out/full_path.md"
import json, sys
print("| augment.device | images/s, 2nd epoch (8 workers, MoCo v2 ResNet-50, batch 256) |")
print("|---|---|")
for path in ("cuda", "cpu"):
    try:
        history = json.load(open(f"{sys.argv[1]}/full_path_{path}/metrics.json"))["history"]
        print(f"| {path} | {history[-1]['samples_per_s']:.0f} |")
    except (OSError, KeyError, IndexError) as err:
        print(f"| {path} | no result ({err}) |")
EOF

if [ "${DATA_ONLY:-0}" != 1 ]; then
step "clustering round 1,281,167 x 128, k 25k/50k/100k (torch, GPU)" round.md "$py" tools/bench_round.py \
    --num-samples 1281167 --clusters 25000,50000,100000 --backends torch --device cuda --repeats 1 --centres 25000

step "MoCo v2 ResNet-50 on an ImageNet-shaped JPEG tree, detection vs plain" imagenet_shaped.md "$py" \
    tools/imagenet_shaped_run.py --device cuda --nproc 1 --backbone resnet50 --image-size 224 --classes 100 \
    --images-per-class 64 --val-per-class 10 --photo-size 320 --batch-size 64 --proj-hidden 2048 --queue 4096 \
    --epochs 3 --workers 8 --compare-plain --root "$out/imagenet_shaped_jpegs" --out "$out/imagenet_shaped"
fi

printf '%s\n' "" "| step | exit status | seconds |" "|---|---|---|" "${summary[@]}" | tee "$out/summary.md"
exit $failed

#!/usr/bin/env bash
# The sweep speed check on a lent GPU, in one call.
#   here, once:   bash benchmarks/gpu.sh --prepare      # LFW people with >= 20 images -> .gpu-data/ (26 MB, git-ignored)
#   device tool:  run(command="bash benchmarks/gpu.sh", carry=[".gpu-data"], timeout_s=540)
# The GPU machine has torch, torchvision, pandas, scikit-learn, PyYAML, tqdm but no wandb and no faiss:
# tracking is disabled and retrieval uses exact torch top-k (same rankings).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  python3 - "${SCIKIT_LEARN_DATA:-../shared/data}/lfw_home/lfw_funneled" <<'PY'
import shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(".gpu-data/lfw_home/lfw_funneled")
n = 0
for person in sorted(p for p in src.iterdir() if p.is_dir()):
    images = sorted(person.glob("*.jpg"))
    if len(images) >= 20:
        (dst / person.name).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(image, dst / person.name / image.name)
            n += 1
print(f"copied {n} images into {dst}")
PY
  exit 0
fi
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD WANDB_MODE=disabled SCIKIT_LEARN_DATA=$PWD/.gpu-data BENCHMARK_CACHE_DIR=/tmp/bench-cache \
       PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python3 benchmarks/sweep_speed.py --set weights=random eval_batch_size=256 num_workers=8 \
    --seeds 4 --noise-seeds 3 --out /tmp/speed 2>&1 | tee "$OUT/speed.log"
cp /tmp/speed/per_config.csv /tmp/speed/summary.json "$OUT/"

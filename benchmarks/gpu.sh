#!/usr/bin/env bash
# The GPU checks on a lent GPU, in one call; every step writes its numbers under $OUT as it goes, so a
# time-out still leaves what finished.
#   here, once:   bash benchmarks/gpu.sh --prepare      # LFW people with >= 20 images -> .gpu-data/ (26 MB, git-ignored)
#   device tool:  run(command="bash benchmarks/gpu.sh", carry=[".gpu-data"], timeout_s=540)
# The GPU machine has torch, torchvision, pandas, scikit-learn, PyYAML, tqdm but no wandb and no faiss:
# tracking is disabled and retrieval uses exact torch top-k (same rankings).
# Steps: 1 preflight (seconds: imports, CUDA, data; stops with the list of what is missing),
#        2 GPU fast paths (nvjpeg + bf16 feature pass with its fallbacks, block-wise metrics on the GPU: scale.py),
#        3 the sweep speed check (sweep_speed.py).
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

# 1. preflight: a few seconds; stops with everything that is missing, not the first thing
python3 - <<'PY' 2>&1 | tee "$OUT/preflight.txt"
import importlib, os, sys
missing = []
for module in ("torch", "torchvision", "numpy", "scipy", "sklearn", "yaml", "tqdm", "pandas", "PIL"):
    try:
        importlib.import_module(module)
    except Exception as exc:
        missing.append(f"python module {module} ({type(exc).__name__}: {exc})")
try:
    import torch
    if not torch.cuda.is_available():
        missing.append("CUDA: torch.cuda.is_available() is False (no GPU visible to torch)")
    else:
        print("GPU:", torch.cuda.get_device_name(), "torch", torch.__version__)
except Exception:
    pass
lfw = os.path.join(os.environ["SCIKIT_LEARN_DATA"], "lfw_home", "lfw_funneled")
people = [p for p in os.listdir(lfw)] if os.path.isdir(lfw) else []
if len(people) < 62:
    missing.append(f"data: {lfw} holds {len(people)} people, 62 expected "
                   "(run `bash benchmarks/gpu.sh --prepare` here, then carry=['.gpu-data'])")
if missing:
    print("PREFLIGHT FAILED, missing:\n  " + "\n  ".join(missing))
    sys.exit(1)
print(f"preflight ok: imports, CUDA, {len(people)} people carried")
PY
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"

# 2. GPU fast paths: block-wise metrics at 50k on the GPU (retrieval; no faiss there), and the streaming
#    feature pass with nvjpeg + bf16 (fallbacks logged)
python3 benchmarks/scale.py --device cuda --retrieval-only --metrics 50000 100000 --images 20000 \
    --out "$OUT/scale" 2>&1 | tee "$OUT/scale.log"

# 3. the sweep speed check
python3 benchmarks/sweep_speed.py --set weights=random eval_batch_size=256 num_workers=8 \
    --seeds 4 --noise-seeds 3 --out /tmp/speed 2>&1 | tee "$OUT/speed.log"
cp /tmp/speed/per_config.csv /tmp/speed/summary.json "$OUT/"

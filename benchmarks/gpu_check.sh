#!/usr/bin/env bash
# One short GPU check (run on a machine with an NVIDIA GPU and torch/transformers/accelerate installed):
# training throughput of the small, base and paper presets against BertForMaskedLM, fp32 and bf16 autocast,
# the matmul peak, and encode_users throughput. Prints JSON and tables; writes ${OUT:-.}/gpu_bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())"
PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/bench_train.py --device cuda --presets small,base,paper \
    --batch-size "${BATCH:-64}" --steps "${STEPS:-10}" --warmup 3 --encode-users "${USERS:-4096}" \
    --json "${OUT:-.}/gpu_bench.json"

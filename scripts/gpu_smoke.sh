#!/usr/bin/env bash
# GPU smoke benchmark: bf16 distill-step throughput and peak memory (chunked fused heads vs naive full logits)
# and llava-ckd plan's memory estimate against the measured peak (benchmarks/plan_vs_measured.py --cuda)
# of a Qwen2.5-0.5B-shaped LLaVA Student with a 1.5B-shaped online Teacher, random init (benchmarks/gpu_distill.py).
#
# Usage (from a clone, after `make setup`):  bash scripts/gpu_smoke.sh [benchmark options, e.g. --batch-size 4]
# Python: ${PYTHON:-.venv/bin/python}. It needs a CUDA build of torch: `make setup` installs the pinned torch
# as pip resolves it, which can be the `+cpu` wheel. Then install a CUDA build of the same torch version into
# the venv yourself, or point PYTHON at an interpreter that has one; this script installs nothing. Runs under `timeout 300` (5 minutes; GPU_SMOKE_TIMEOUT changes it).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PYTHON="${PYTHON:-.venv/bin/python}"
LIMIT_S="${GPU_SMOKE_TIMEOUT:-300}"

die() {
    echo "gpu_smoke: $*" >&2
    exit 2
}

command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this needs a machine with an NVIDIA GPU and its driver"
gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)" \
    || die "nvidia-smi sees no GPU: ${gpus}"
[ -n "${gpus}" ] || die "nvidia-smi lists no GPU"
[ -x "${PYTHON}" ] || command -v "${PYTHON}" >/dev/null 2>&1 \
    || die "no Python at ${PYTHON}: run \`make setup\` first, or set PYTHON=/path/to/python"

echo "GPU (name, memory, driver): ${gpus}"
"${PYTHON}" - <<'EOF' || exit 2
import sys

import torch
import transformers

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
if not torch.cuda.is_available():
    sys.exit(
        f"gpu_smoke: this torch ({torch.__version__}) cannot use the GPU"
        + (": it is a CPU-only build" if torch.version.cuda is None else "")
        + ". Install a CUDA build of the same torch version into this environment, or set PYTHON to one that has it."
    )
print(f"torch sees: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} device(s))")
EOF

timeout "${LIMIT_S}" "${PYTHON}" benchmarks/gpu_distill.py "$@"
rc=$?
if [ "${rc}" -eq 124 ]; then
    echo "gpu_smoke: the benchmark ran past ${LIMIT_S} s and was stopped" >&2
elif [ "${rc}" -ne 0 ]; then
    echo "gpu_smoke: the benchmark failed (exit ${rc})" >&2
fi
# llava-ckd plan's memory estimate vs torch.cuda.max_memory_allocated of a real distill step at two small shapes
# (benchmarks/plan_vs_measured.py --cuda). Not yet run on a GPU: no device was available when it was added.
timeout "${LIMIT_S}" "${PYTHON}" benchmarks/plan_vs_measured.py --cuda
plan_rc=$?
if [ "${plan_rc}" -ne 0 ]; then
    echo "gpu_smoke: plan_vs_measured.py --cuda failed (exit ${plan_rc})" >&2
    [ "${rc}" -ne 0 ] || rc="${plan_rc}"
fi
exit "${rc}"

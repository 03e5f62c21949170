#!/usr/bin/env bash
# One GPU check, for the day a GPU is lent (under 8 minutes on one GPU). Prints, for the joint baseline:
#   1. images/s, achieved TFLOP/s and peak GPU memory for fp32, bf16, bf16+channels_last and
#      +torch.compile, at batch 4 with 256x256 inputs and at batch 16 with 512x512 inputs (square crops
#      of the training size; bench/gpu_throughput.py, the engine's own training step);
#   2. runs/hour with one run on the GPU against two packed on it (mtl-ablate run --jobs-per-device 1
#      and 2, four short bf16 runs at 256x512 each time);
#   3. a 2-epoch synthetic training at 256x512 end to end (mtl-train), with its submission.zip checked.
# Without a CUDA GPU it prints one line saying so and exits 0.
#
#   bash bench/gpu_check.sh            (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU is available on this machine; nothing measured."
    exit 0
fi

export WANDB_MODE=disabled PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export MTL_CACHE_DIR="$work/cache"   # synthetic datasets built here, not in the user's cache
section() { printf '\n== %s (%d s into the check)\n' "$1" "$SECONDS"; }

section "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))'

section "throughput, batch 4, 256x256"
"$PY" bench/gpu_throughput.py --batch 4 --height 256 --width 256 --steps 20 --rounds 3 --warmup 5
section "throughput, batch 16, 512x512"
"$PY" bench/gpu_throughput.py --batch 16 --height 512 --width 512 --steps 10 --rounds 3 --warmup 5

section "packing: runs/hour with 1 and 2 runs on the GPU (mtl-ablate run --jobs-per-device N)"
ablations="$work/ablations"
mkdir -p "$ablations/profiles"
cat > "$ablations/profiles/gpucheck.yaml" <<'YAML'
dataset: synthetic
synthetic_num_train: 256
synthetic_num_val: 32
synthetic_num_test: 16
aug_input_crop_size: 256
num_epochs: 1
batch_size: 4
batch_size_validation: 16
workers: 4
workers_validation: 2
amp: bf16
channels_last: true
visualize_num_images: 0
YAML
cat > "$ablations/gpucheck.pack.yaml" <<'YAML'
question: How many short runs per hour does one GPU train, one or two at a time?
item: '0'
base: gpucheck
seeds: [0, 1, 2, 3]
grid:
  optimizer_lr: [0.01]
YAML
# Build the profile's synthetic dataset once, outside the timing (and not by two runs at once).
"$PY" - "$ablations/profiles/gpucheck.yaml" <<'PY'
import sys
import yaml
from mtl.config import make_config
from mtl.data import resolve_dataset_root
print("dataset:", resolve_dataset_root(make_config(yaml.safe_load(open(sys.argv[1])))))
PY
for jobs in 1 2; do
    runs="$work/runs-$jobs"
    start=$(date +%s.%N)
    "$PY" -m mtl.suite run gpucheck.pack --ablations-dir "$ablations" --runs-dir "$runs" \
        --devices 0 --jobs-per-device "$jobs" > "$work/pack-$jobs.log" 2>&1 \
        || { echo "mtl-ablate run --jobs-per-device $jobs failed:"; tail -20 "$work/pack-$jobs.log"; exit 1; }
    end=$(date +%s.%N)
    "$PY" - "$start" "$end" "$jobs" "$runs" <<'PY'
import sys
from pathlib import Path
from mtl.run.layout import find_run_dirs
from mtl.run.records import recorded_state
start, end, jobs, runs = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
states = [recorded_state(d) for d in find_run_dirs(runs)]
done = states.count("finished")
print(f"--jobs-per-device {jobs}: {done}/{len(states)} runs finished in {end - start:.1f} s "
      f"= {3600 * done / (end - start):.0f} runs/hour")
PY
done

section "2-epoch synthetic training at 256x512, end to end"
run_dir="$work/train-256x512"
"$PY" -m mtl.cli --dataset=synthetic --synthetic_num_train=256 --synthetic_num_val=32 --synthetic_num_test=16 \
    --synthetic_height=256 --synthetic_width=512 --aug_input_crop_size=256 --num_epochs=2 --batch_size=8 \
    --amp=bf16 --channels_last=true --wandb_mode=disabled --progress=plain --log_dir="$run_dir" \
    > "$work/train.log" 2>&1 || { echo "mtl-train failed:"; tail -30 "$work/train.log"; exit 1; }
tail -3 "$work/train.log"
"$PY" - "$run_dir" <<'PY'
import sys
from pathlib import Path
from mtl.run.layout import RunDirectory
from mtl.run.records import read_record
from mtl.train.submission import validate_submission
run = RunDirectory(Path(sys.argv[1]))
record = read_record(run.path)
problems = validate_submission(run.submission, test_indices=list(range(16)))
best = record.best()
print(f"state {record.state}; best grader {best['val/grader']:.2f} at step {best['step']}; "
      f"elapsed {record.status.elapsed_s} s; submission.zip {run.submission.stat().st_size} bytes, "
      f"{'valid' if not problems else 'PROBLEMS: ' + '; '.join(problems)}")
sys.exit(1 if problems or record.state != "finished" else 0)
PY

section "done"

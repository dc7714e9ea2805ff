#!/usr/bin/env bash
# The GPU checks of one device session, in one command (BENCHMARKS.md "GPU check"): the numerics, kernels,
# memory, speed and compile of benchmarks/gpu_check.py; the CUDA batch-size search and memory profile of
# `aam train --auto-batch-size --memory-profile`; and the oral-age recipe's wall time on the GPU.
# Usage (repository root, python3 with torch and CUDA): bash benchmarks/gpu_session.sh OUT_DIR [DATA_DIR]
# DATA_DIR holds oral_dev.biom and oral_dev_metadata.tsv (default ../shared/data); each step has a time cap.
set -u
out=${1:?output folder}; data=${2:-../shared/data}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia.txt" 2>&1
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" >> "$out/nvidia.txt" 2>&1
timeout 540 $py benchmarks/gpu_check.py --output "$out" --device cuda > "$out/gpu_check.log" 2>&1
scratch=$(mktemp -d)
$py -m aam demo --data-only --output-dir "$scratch/demo" --samples 512 --asvs 400 > /dev/null 2>&1
timeout 90 $py -m aam train --table "$scratch/demo/data/table.biom" --metadata "$scratch/demo/data/metadata.tsv" \
    --metadata-column target --epochs 2 --device cuda --auto-batch-size --memory-profile --seed 1 \
    --output-dir "$scratch/auto" > "$out/auto_batch.log" 2>&1
if [ -f "$data/oral_dev.biom" ]; then
  start=$(date +%s)
  timeout 150 $py -m aam train --preset small-data --max-bp 100 --table "$data/oral_dev.biom" \
      --metadata "$data/oral_dev_metadata.tsv" --metadata-column age --device cuda --seed 42 \
      --output-dir "$scratch/oral" --quiet > /dev/null 2>&1
  echo "exit $? after $(( $(date +%s) - start )) s" > "$out/oral_train.log"
  cat "$scratch/oral/training.log" >> "$out/oral_train.log" 2>/dev/null
fi
ls -la "$out"

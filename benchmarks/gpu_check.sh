#!/usr/bin/env bash
# Every CUDA check of mtlmood in one run, under 8 minutes on one GPU; figures in one file.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default benchmarks/results/gpu)
#   bash benchmarks/gpu_check.sh --dry-run      (no GPU: every step on the CPU, a logical Ray GPU
#                                                for the packing step; default OUT_DIR runs/gpu-check-dry-run)
#
# Writes OUT_DIR/gpu_check.md (every figure: device, CUDA tests, training and inference
# benchmarks on CUDA with their CPU baselines measured in the same run, CUDA graphs of the
# training step, a one-trial study on the GPU, trials per GPU) and OUT_DIR/gpu_check.log (all
# output); OUT_DIR/gpu_check.json (training throughputs, read by `mtlmood study plan`'s cost
# forecast) and gpu_study.{json,md} (trials per GPU). Each step has its own time limit; a
# failed step is recorded and the next one still runs. Exit status: the number of failed steps.
#
# Seconds per step on an H100 (2026-11-26, gpu_check.md): tests 36, train 69 (now without its
# torch.compile variant, measured then at 0.84x), inference 22, study 72-97, batch 8 + 24,
# serve ~40; new: graphs ~30 (estimated), packing at most 150 (its own budget, 120 s, skips levels).
#
# Needs python3 with a CUDA build of torch. The project's other dependencies must be
# importable; on a machine without them (a lent GPU box with no registry), carry wheels
# in .whl/ (built by `python -m benchmarks.build_wheels`: what the image lacks, Ray's wheel
# slimmed, ~54 MiB) and they are installed to a private folder first. Real clips are read from
# $MTLMOOD_SHARED_DATA/audio (default ../shared/data/audio).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then
    export GPU_CHECK_DEVICE=cpu
    shift
fi
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU: a dry run of this script without a GPU.
DEVICE=${GPU_CHECK_DEVICE:-cuda}
# A dry run never writes over a GPU's figures.
DEFAULT_OUT=$([ "$DEVICE" = cpu ] && echo runs/gpu-check-dry-run || echo benchmarks/results/gpu)
OUT_DIR=$(mkdir -p "${1:-$DEFAULT_OUT}" && cd "${1:-$DEFAULT_OUT}" && pwd)
REPORT=$OUT_DIR/gpu_check.md
LOG=$OUT_DIR/gpu_check.log
WORK=$(mktemp -d /tmp/mtlmood-gpu-check.XXXXXX)
PY=${PYTHON:-python3}
ACCEL_STEPS=${GPU_CHECK_STEPS:-50}  # training steps per timed round of the accelerator section
# GPU_CHECK_ONLY=study,serve (say) reruns some steps: tests, train, inference, graphs, study, batch,
# serve, packing (batch and serve use the study of the study step).
ONLY=",${GPU_CHECK_ONLY:-tests,train,inference,graphs,study,batch,serve,packing},"
USE_GPU=$([ "$DEVICE" = cpu ] && echo false || echo true)
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
: >"$LOG"

if compgen -G ".whl/*.whl" >/dev/null && ! $PY -c "import ray, optuna, librosa, pydantic, fastapi" 2>/dev/null; then
    echo "installing carried wheels into $WORK/site" | tee -a "$LOG"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl >>"$LOG" 2>&1 || exit 1
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the repository's packages, for Ray's workers too

FAILED=0
STEPS=()
# step KEY NAME LIMIT_S COMMAND...: runs with a time limit, logs, records status and seconds.
step() {
    local key=$1 name=$2 limit=$3 t0 rc
    shift 3
    [[ $ONLY == *",$key,"* ]] || return 0
    echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    [ "$rc" -ne 0 ] && FAILED=$((FAILED + 1))
    STEPS+=("| $name | $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") | $(($(date +%s) - t0)) |")
    echo "=== $name: exit $rc" | tee -a "$LOG"
}

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); host $(hostname); $(nproc) CPU cores."
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    $PY -c "import torch, ray, optuna, librosa; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), '| ray', ray.__version__, '| optuna', optuna.__version__, '| librosa', librosa.__version__)" 2>&1
    echo '```'
} >"$REPORT"

# 1. The CUDA tests (skipped on machines without CUDA, so CI never runs them).
step tests "CUDA tests" 240 $PY -m pytest -q -p no:cacheprovider -p no:randomly \
    tests/mtlmood/test_cuda.py tests/mtlmood/test_device_sampler.py tests/mtlmood/test_train_graphs.py \
    --junitxml="$WORK/tests.xml"

# 2. Training on CUDA: host sampler + copy (baseline) vs device-resident sampler, bf16,
#    channels-last (torch.compile, 0.84x on 2026-11-26, left out for time); the CPU sections
#    of the benchmark run too, briefly.
step train "training benchmark" 240 $PY -m benchmarks.train_bench --skip-ray --step-rounds 2 --accuracy-epochs 2 \
    --accelerator "$DEVICE" --accelerator-steps "$ACCEL_STEPS" --no-compile --out "$WORK"

# 3. Inference on CUDA vs the CPU default path, same clips, same run.
step inference "inference benchmark" 150 $PY -m benchmarks.cuda_inference_bench --rounds 5 --device "$DEVICE" --out "$WORK"

# 3b. CUDA graphs of the training step vs eager, at the paper's window and at 64 x 32, fp32 and bf16,
#     and how far the two train apart from the same weights (train.cuda_graphs stays off unless
#     this shows a gain).
GRAPH_STEPS=$([ "$DEVICE" = cpu ] && echo "--steps 1 --rounds 1" || echo "--steps 50 --rounds 3")  # a CPU only checks the path
step graphs "CUDA graphs of the training step" 120 $PY -m benchmarks.gpu_graphs_bench --device "$DEVICE" $GRAPH_STEPS \
    --out "$WORK"

# 4. A one-trial study on the GPU (the demo's data and settings, one cell, one search
#    trial, no curve), with the GPU's memory sampled every second while it runs.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >"$WORK/gpu_usage.csv" 2>/dev/null &
SAMPLER=$!
step study "one-trial study on the GPU" 240 $PY -m mtlmood_cli demo --output "$WORK/demo" --num-cpus "$(nproc)" \
    --set search.trials_per_cell=1 --set 'search.metadata=[artist]' --set curve.enabled=false \
    --set resources.use_gpu=$USE_GPU --set resources.cpus_per_worker=1
kill "$SAMPLER" 2>/dev/null
STUDY_DIR=${GPU_CHECK_STUDY:-$WORK/demo/studies/synthetic-alpha}  # another study: for a rerun of batch/serve alone
CLIPS=${MTLMOOD_SHARED_DATA:-../shared/data}/audio

# 5. Batch inference with the study's best model on the GPU: the local path, then the Ray
#    Data pipeline (scoring actors on the GPU); rows compared in the report.
step batch "batch inference, local" 120 $PY -m mtlmood_cli predict "$STUDY_DIR" "$CLIPS" --device "$DEVICE" \
    --output "$WORK/batch_local.parquet" --quiet
step batch "batch inference, Ray Data" 180 $PY -m mtlmood_cli predict "$STUDY_DIR" "$CLIPS" --device "$DEVICE" \
    --output "$WORK/batch_ray.parquet" --ray --quiet

# 6. The endpoint with its default settings (model replicas on the GPU) under a short load.
step serve "serve smoke" 240 $PY -m benchmarks.serve_smoke --study "$STUDY_DIR" --clients 8 --requests 96 --out "$WORK"

# 7. Trials per GPU: the same short trials at 1, 2, 4 and 8 per GPU (trials/hour, GPU utilisation,
#    memory, scores); last, with a budget of its own: levels that would overrun are skipped.
step packing "trials per GPU" 170 $PY -m benchmarks.gpu_study_bench $([ "$DEVICE" = cpu ] && echo --dry-run) \
    --budget-s 120 --seeds 2 --epochs 2 --batches 150 --out "$WORK"
$PY -m benchmarks.gpu_results "$WORK" "$OUT_DIR" >>"$LOG" 2>&1
for name in gpu_study.json gpu_study.md; do
    [ -f "$WORK/$name" ] && cp "$WORK/$name" "$OUT_DIR/$name"
done

{
    echo
    echo "## Steps"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---|"
    printf '%s\n' "${STEPS[@]}"
    echo
    echo "## CUDA tests"
    echo
    $PY - "$WORK/tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as exc:
    print(f"no test report ({exc})")
    raise SystemExit(0)
for case in root.iter("testcase"):
    outcome = "passed"
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            outcome = f"{tag}: {(node.get('message') or '')[:160]}"
    print(f"- `{case.get('name')}` ({float(case.get('time', 0)):.1f} s): {outcome}")
EOF
    for name in train cuda_inference gpu_graphs serve_smoke gpu_study; do
        if [ -f "$WORK/$name.md" ]; then
            echo
            sed 's/^#/##/' "$WORK/$name.md"
        fi
    done
    echo
    echo "## One-trial study on the GPU"
    echo
    $PY - "$WORK" <<'EOF'
import csv
import glob
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
rows = list(csv.reader(open(work / "gpu_usage.csv"))) if (work / "gpu_usage.csv").exists() else []
if rows:
    util = [float(r[1]) for r in rows if len(r) > 2 and r[1].strip().replace(".", "").isdigit()]
    mem = [float(r[2]) for r in rows if len(r) > 2 and r[2].strip().replace(".", "").isdigit()]
    if util and mem:
        print(f"GPU sampled {len(rows)} times at 1 s: peak utilisation {max(util):.0f} %, "
              f"peak memory used {max(mem):.0f} MiB (idle {min(mem):.0f} MiB)")
        print()
results = sorted(glob.glob(str(work / "demo" / "studies" / "*" / "runs" / "**" / "result.json"), recursive=True))
tables = sorted(glob.glob(str(work / "demo" / "studies" / "*" / "report" / "trials.csv")))
for path in results:
    r = json.loads(Path(path).read_text())
    keep = {k: r[k] for k in ("alpha", "best_epoch", "seconds", "stopped_early") if k in r}
    print(f"- `{Path(path).relative_to(work)}`: {keep}")
columns = ["phase", "cell", "alpha", "status", "epochs", "best_epoch", "val_pr_auc", "test_pr_auc", "train_seconds"]
for path in tables:
    print(f"\n`{Path(path).name}`:\n")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in csv.DictReader(open(path)):
        print("| " + " | ".join(row.get(c, "") for c in columns) + " |")
best = glob.glob(str(work / "demo" / "studies" / "*" / "best_checkpoint.json"))
print(f"\nbest_checkpoint.json: {'written' if best else 'MISSING'}")
EOF
    echo
    echo "## Batch inference on the GPU"
    echo
    $PY - "$WORK" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

work = Path(sys.argv[1])
paths = {name: work / f"batch_{name}.parquet" for name in ("local", "ray")}
if not all(p.exists() for p in paths.values()):
    print(f"missing output: {[str(p) for p in paths.values() if not p.exists()]}")
    raise SystemExit(0)
local, ray = (pd.read_parquet(p) for p in paths.values())
print(f"rows: local {len(local)}, Ray Data {len(ray)}; columns: {list(local.columns)}")
both = local.merge(ray, on="path", suffixes=("_local", "_ray")).dropna(subset=["moods_local", "moods_ray"])
worst = max((abs(a[m] - b[m]) for a, b in zip(both["moods_local"], both["moods_ray"]) for m in a), default=float("nan"))
print(f"max |Δp| between the two paths over {len(both)} tracks: {worst:.1e}")
EOF
    echo
    echo "## Failed steps: $FAILED"
} >>"$REPORT" 2>&1

echo "report: $REPORT"
rm -rf "$WORK"
exit "$FAILED"

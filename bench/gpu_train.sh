#!/usr/bin/env bash
# Train the reranker (and its reader) on a lent GPU machine in one call of the device tool, from a file of mined
# training groups: that machine has torch, transformers and sentence-transformers, but not the embedder, LanceDB or
# ../shared, and a call may run 10 minutes. Mining needs those, so it runs here first, on the CPU.
#
# 1. Here (10-15 min on 2 cores; the wheels pin the versions this tree is tested with, 14 MB):
#      chatbot --db /work/evaldb train-reranker ../shared/eval/squad2 ../shared/eval/squad2-extra ../shared/eval/scifact \
#          --save-examples .train/examples.json.gz --validation-limit 150
#      python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#          --platform manylinux2014_x86_64 -d .train sentence-transformers==6.2.0 transformers==5.24.0
# 2. The device tool, with carry [".train"] and timeout_s 600 (arguments after MINUTES go to train-reranker):
#      bash bench/gpu_train.sh .train/examples.json.gz 5 --init shipped --reader --span-pairs 32 --groups-per-step 16 --seed 3
#    A 40-step probe times a step first; the run then gets as many steps as fit in MINUTES, so its learning
#    rate anneals to the end inside the call (a run cut short by --max-minutes would stop at full rate).
#    Beside MINUTES the call spends about 3 more: installing, loading and the IDF twice, validation and tuning
#    on 450 held-out questions, the tarball. 5 fits the tool's 10-minute command limit with room to spare.
# 3. Here, from the files the tool fetched (FETCHED: its files_at folder):
#      mkdir -p /work/reader-gpu && cat FETCHED/model.tgz.part-* | tar xz -C /work/reader-gpu
#    then the card's `calibrate` and `eval` commands with --reranker /work/reader-gpu (chatbot/resources/reranker/README.md).
set -euo pipefail
examples=$1 minutes=$2
shift 2
out=${OUT:-$(mktemp -d)}  # the device tool fetches what is under $OUT
work=$(mktemp -d)
python=${PYTHON:-python3}
device=${TRAIN_DEVICE:-cuda}  # TRAIN_DEVICE=cpu PYTHON=.venv/bin/python: a dry run of this script on any machine
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true LANCE_LOG=error
if compgen -G ".train/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .train/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$device" = cuda ]; then
    "$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; print(torch.cuda.get_device_name())"
fi

train() { "$python" -m chatbot.cli train-reranker --examples "$examples" --device "$device" "$@"; }
train --out "$work/probe" --steps 40 --skip-validation "$@" > "$out/probe.log" 2>&1 || { tail -30 "$out/probe.log"; exit 1; }
steps=$("$python" - "$work/probe/training_report.json" "$minutes" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
per_minute = report["steps"] / max(report["minutes"], 1e-3)  # the first steps' warm-up included: an underestimate
print(f"probe: {report['steps']} steps in {report['minutes']} min", file=sys.stderr)
print(max(40, int(per_minute * float(sys.argv[2]) * 0.9)))
PY
)
echo "training $steps steps"
train --out "$work/model" --steps "$steps" --max-minutes "$minutes" "$@" > "$out/train.log" 2>&1 || {
    tail -40 "$out/train.log"; exit 1; }
tr '\r' '\n' < "$out/train.log" | grep -v "^train: " | tail -20
cp "$work/model/training_report.json" "$out/"
# The device tool fetches files of at most 16 MB: the model folder travels as a tarball in 15 MB parts.
tar czf - -C "$work/model" --exclude checkpoint . | split -b 15M - "$out/model.tgz.part-"
ls -la "$out"

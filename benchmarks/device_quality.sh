#!/usr/bin/env bash
# Issue 9's GPU quality check, as one command on a lent GPU machine (the `device` tool), which has
# PyTorch but not this project's other needs, nor ../shared/datasets, nor the FID weights. It trains
# CUT translators side by side on the one GPU with `quality.py --train-only`, then packs each run's
# photo2monet.pt and result.json into $OUT as NAME.tgz.aa, .ab, ... (`cat NAME.tgz.* | tar xzf -`);
# this machine scores them (`--score-only`; the README's "GPU figures" says how). Each argument is
# one run, 'NAME=QUALITY.PY ARGS' (split at spaces); with none, the first GPU session's two:
#
#   gpu-cut256:  the params defaults (256 px, 9 blocks, widths 64) with resize-convolution upsampling
#   gpu-recipe:  the README's CPU recipe (128 px crops, 6 blocks, widths 32), given the GPU's steps
#
# Needs a folder PAYLOAD (default .gpu, carried) with datasets/photos (the first --train-photos of
# ../shared/datasets/photos), datasets/monet-train30 and whl/ (pydantic and what it needs, for the
# machine's Python). BUDGET (default "--minutes 5.5 --calibration-steps 300") is each run's training
# budget, calibrated on the machine; a run that outlasts LIMIT seconds is stopped, and its last saved
# epoch is what gets scored.
set -uo pipefail
PAYLOAD=${PAYLOAD:-.gpu}
BUDGET=${BUDGET:---minutes 5.5 --calibration-steps 300}
LIMIT=${LIMIT:-460}
OUT=${OUT:?set OUT to the folder the packed runs go to}
RUNS=/tmp/lowshot-gpu

if compgen -G "$PAYLOAD/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$PAYLOAD"/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

train() {  # NAME ARGS...: one --train-only run, its log in $RUNS/NAME.log
  local name=$1; shift
  timeout "$LIMIT" python3 benchmarks/quality.py --datasets "$PAYLOAD/datasets" --out "$RUNS" --name "$name" \
    --train-only --translator cut --channels-last auto --set workers=8 $BUDGET "$@" >"$RUNS/$name.log" 2>&1
  echo "$name: exit $?"
}
mkdir -p "$RUNS"
(($#)) || set -- "gpu-cut256=--recipe defaults --set upsample=resize" "gpu-recipe=--recipe cpu"
for spec in "$@"; do
  train "${spec%%=*}" ${spec#*=} &
done
wait

# A run stopped by the limit wrote no result.json: record its last saved epoch (whose generator the
# loop has already published as photo2monet.pt) so that --score-only can score it.
python3 - "$RUNS" "$LIMIT" <<'EOF'
import json, sys, torch
from pathlib import Path
from lowshot.train.checkpoint import latest_state, load_state
for run in sorted(Path(sys.argv[1]).glob("*/run")):
    if (run.parent / "result.json").is_file() or (state := latest_state(run)) is None:
        continue
    saved, limit = load_state(state), float(sys.argv[2])
    steps = saved["progress"]["step"]
    print(f"{run.parent.name}: stopped at {limit:g} s; its photo2monet.pt is epoch {saved['epoch']:g} ({steps} steps)")
    (run.parent / "result.json").write_text(json.dumps({
        "name": run.parent.name, "translator": saved["arch"], "sources": "real", "steps": steps, "select": "last",
        "stopped_early": True, "train_s": limit, "s_per_step": limit / max(steps, 1), "threads": torch.get_num_threads(),
        "train_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}, indent=1))
EOF
# Each run packed apart, as many whole runs as $OUT can return (8 files of at most 16 MiB, 64 MiB in
# all; a 256 px generator of widths 64 is 45 MB): a run left out stays in /tmp on the warm machine.
cd "$RUNS" && tail -n 3 ./*.log
room=$((62 << 20)) files=8
for run in */run/photo2monet.pt; do
  name=${run%%/*}
  tar czf "/tmp/$name.tgz" "$name.log" "$name/result.json" "$name/run/photo2monet.pt" "$name/run/losses.jsonl"
  size=$(stat -c %s "/tmp/$name.tgz")
  parts=$(( (size + (15 << 20) - 1) / (15 << 20) ))
  if ((size > room || parts > files)); then
    echo "$name: no room left in \$OUT; fetch /tmp/$name.tgz with a second call while the machine is warm"
    continue
  fi
  split -b 15m "/tmp/$name.tgz" "$OUT/$name.tgz." && room=$((room - size)) files=$((files - parts))
done
ls -la "$OUT"

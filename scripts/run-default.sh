#!/usr/bin/env bash
# `make run`: the main job on the embedded default — no broker and no data of the user's needed.
#  1. the built-in simulator produces a day of enterprise traffic with known structure (and labelled attacks);
#  2. `temponet compare` trains TempoNet and the independent baseline on the first 80 % of it, generates the
#     last 20 %'s span from each, and evaluates both against the real (simulated) last 20 %;
#  3. the report (Markdown + PNG plots) path is printed.
# Knobs (environment): RUN_HOSTS, RUN_SPAN, RUN_SEED, RUN_EPOCHS, RUN_MODELS.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/run}
BIN=${TEMPONET_BIN:-target/debug/temponet}
HOSTS=${RUN_HOSTS:-30}
SPAN=${RUN_SPAN:-24h}
SEED=${RUN_SEED:-7}
EPOCHS=${RUN_EPOCHS:-3}
MODELS=${RUN_MODELS:-temponet,independent}
mkdir -p "$OUT"
start=$(date +%s)
echo "== simulating $SPAN of an enterprise network with $HOSTS hosts (seed $SEED)"
"$BIN" simulate --hosts "$HOSTS" --span "$SPAN" --seed "$SEED" --out "$OUT/simulated.jsonl"
"$BIN" inspect "$OUT/simulated.jsonl"
echo "== training $MODELS on the first 80 %, generating and evaluating the last 20 %"
"$BIN" compare --input "$OUT/simulated.jsonl" --split 0.8 --models "$MODELS" --epochs "$EPOCHS" \
  --seed "$SEED" --no-utility --out "$OUT/report"
echo "== done in $(( $(date +%s) - start )) s; report: $OUT/report/report.md (plots beside it)"

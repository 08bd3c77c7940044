#!/usr/bin/env bash
# `make run`: the main job on the embedded default — no broker and no data of the user's needed.
#  1. `temponet run` streams a day of simulated enterprise traffic (the built-in simulator, known structure) through
#     the dataflow: pair state, TempoNet built from the first hour and trained online, parameter averaging across
#     workers, synthetic twins generated epoch by epoch, live fidelity figures in place on the console;
#  2. the same stream through the independent baseline (every field from its own marginal, Poisson arrivals);
#  3. `temponet eval` of both synthetic streams against the simulated traffic of the same span: the report
#     (Markdown + PNG plots) path is printed.
# Knobs (environment): RUN_HOSTS, RUN_SPAN, RUN_SEED, RUN_WORKERS, RUN_EPOCH_MS.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/run}
BIN=${TEMPONET_BIN:-target/debug/temponet}
HOSTS=${RUN_HOSTS:-30}
SPAN=${RUN_SPAN:-24h}
SEED=${RUN_SEED:-7}
WORKERS=${RUN_WORKERS:-2}
EPOCH_MS=${RUN_EPOCH_MS:-60000}
mkdir -p "$OUT"
start=$(date +%s)
common=(--hosts "$HOSTS" --span "$SPAN" --seed "$SEED" -w "$WORKERS" --epoch-ms "$EPOCH_MS" --window-epochs 30
        --warmup-epochs 60 --warmup-flows 3000 --save-input)
echo "== streaming $SPAN of a simulated network ($HOSTS hosts, seed $SEED) through TempoNet, $WORKERS workers"
"$BIN" run "${common[@]}" --model-kind temponet --out "$OUT/temponet" --report "$OUT/temponet/run.json" >/dev/null
echo "== the same stream through the independent baseline"
"$BIN" run "${common[@]}" --model-kind independent --out "$OUT/independent" --report "$OUT/independent/run.json" \
  --quiet >/dev/null
echo "== evaluating both synthetic streams against the simulated traffic of the same span"
"$BIN" eval --real "$OUT/temponet/input.jsonl" --synthetic "$OUT/temponet/synthetic.jsonl" --name temponet \
  --also "independent=$OUT/independent/synthetic.jsonl" --clip-to-synthetic --no-utility --out "$OUT/report"
echo "== done in $(( $(date +%s) - start )) s; live metrics: $OUT/temponet/metrics.jsonl; report: $OUT/report/report.md (plots beside it)"

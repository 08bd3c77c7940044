#!/usr/bin/env bash
# `make run`: the main job on the embedded default. Until the simulator and the dataflow land, it converts the
# bundled sample to JSON lines and inspects it, which exercises every reader and the writer end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/run}
mkdir -p "$OUT"
BIN=target/release/temponet
$BIN convert --to jsonl tests/data/sample-nfdump.csv "$OUT/sample.jsonl"
$BIN inspect "$OUT/sample.jsonl"

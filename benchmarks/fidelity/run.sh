#!/usr/bin/env bash
# Issue 15's ablation: the four readings of NN-2 on Fashion-MNIST at the paper's protocol,
# one study each, into one store. Resumable: rerun it after any interruption.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
store=${STORE:-out/fidelity/ablation.sqlite}
mkdir -p "$(dirname "$store")"
for reading in standard-all unit-all standard-weights unit-weights; do
  annealbench run "$here/nn2-$reading.toml" --store "$store" --workers "${WORKERS:-1}" --no-progress
done
annealbench report --store "$store" --out "$(dirname "$store")/report"

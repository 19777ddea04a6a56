#!/usr/bin/env bash
# The main job: a tour of the language-model core on a small model made on the spot (nothing is
# downloaded): write a random-weight Mamba folder in Hugging Face format, inspect it, score a
# sequence, generate from it, and run the kernel benchmark briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
M=build/mambavl
OUT=${MAMBAVL_DEMO_DIR:-out/demo}
mkdir -p "$OUT"
echo "== mambavl init: a random-weight mamba-tiny folder (config.json + model.safetensors)"
$M init --preset mamba-tiny --seed 1 --out "$OUT/mamba-tiny"
echo "== mambavl info"
$M info --model "$OUT/mamba-tiny"
echo "== mambavl perplexity (random weights: ppl is near the vocabulary size)"
$M perplexity --model "$OUT/mamba-tiny" --ids 1,2,3,4,5,6,7,8,9,10,11,12
echo "== mambavl generate (greedy, 16 tokens, ids printed)"
$M generate --model "$OUT/mamba-tiny" --ids 1,2,3 --max-new-tokens 16 --greedy --print-ids --stats
if $M bench --help 2>/dev/null | grep -q '^  scan'; then
  echo "== mambavl bench scan (fused vs reference selective scan, short run)"
  $M bench scan --dim 256 --len 256 --repeats 2
fi
echo "demo done: try 'build/mambavl --help' and 'build/mambavl bench lm'"
